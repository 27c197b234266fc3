"""Framing with the real detectors on public-domain pictures: levelling, placing, group photos, cats."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from group_photos import PORTRAITS, group_photo
from styles.payload import framing

torch.set_num_threads(1)
FIXTURES = Path(__file__).with_name("fixtures")
FACES = FIXTURES / "faces"


@pytest.fixture(scope="module")
def people() -> framing.PeopleFramer:
    return framing.PeopleFramer()


def rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def landmarks_in_crop(people: framing.PeopleFramer, img: Image.Image, frame: framing.Frame) -> np.ndarray:
    """Where MTCNN finds the landmarks in the 256 px crop, as fractions of its side."""
    crop = framing.crop(img, frame, 256)
    faces = people.faces(crop)
    assert len(faces) == 1
    return faces[0].landmarks / 256


@pytest.mark.parametrize("angle", [0, 25, -35])
def test_a_tilted_face_comes_out_level_and_framed_like_the_training_selfies(
    people: framing.PeopleFramer, angle: float
) -> None:
    photo = rgb(FACES / "grace_hopper.jpg").rotate(angle, Image.BICUBIC, expand=True, fillcolor=(90, 90, 90))
    (frame,) = people.frames(photo)
    points = landmarks_in_crop(people, photo, frame)
    eye_line = points[1] - points[0]
    assert abs(math.degrees(math.atan2(eye_line[1], eye_line[0]))) < 3
    assert np.abs(points - framing.SELFIE_LANDMARKS).max() < 0.04


def test_a_small_face_in_a_large_photo_is_framed_like_a_selfie(people: framing.PeopleFramer) -> None:
    photo = Image.new("RGB", (3000, 2000), (200, 190, 170))
    photo.paste(rgb(PORTRAITS[0]).resize((120, 150), Image.LANCZOS), (2300, 1500))
    (frame,) = people.frames(photo)
    assert 60 < frame.size < 150  # the crop is about the face's own size, not the photo's
    assert np.abs(landmarks_in_crop(people, photo, frame) - framing.SELFIE_LANDMARKS).max() < 0.05


def test_what_a_frame_reaches_outside_the_photo_is_blurred_edge_not_a_mirrored_face(
    people: framing.PeopleFramer,
) -> None:
    """A selfie cut off under the chin: mirrored in, a second mouth stood below the first and was drawn."""
    photo = rgb(FIXTURES / "obama_256.jpg")
    (frame,) = people.frames(photo)
    square = framing.crop(photo, frame, 256)
    crop = np.asarray(square.convert("L"), dtype=np.float32)
    inside = cv2.warpAffine(np.ones((photo.height, photo.width), np.float32), frame.scaled(256), (256, 256))
    outside = cv2.erode((inside == 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert outside.mean() > 0.05  # the frame does reach past the photo's bottom edge
    detail = np.abs(cv2.Laplacian(crop, cv2.CV_32F))
    assert detail[outside].mean() < 0.1 * detail[inside >= 1].mean()
    assert len(people.faces(square)) == 1


def test_every_face_of_a_group_photo_gets_a_frame_largest_first(people: framing.PeopleFramer) -> None:
    photo = group_photo(3, 200)
    frames = people.frames(photo)
    assert len(frames) == 3
    assert [f.size for f in frames] == sorted((f.size for f in frames), reverse=True)
    centres = sorted(cv_centre(f) for f in frames)
    assert [int((x - 20) // 220) for x, _ in centres] == [0, 1, 2]  # one per portrait, left to right


def cv_centre(frame: framing.Frame) -> tuple[float, float]:
    """Where the middle of a crop lies in the photo."""
    inverse = np.linalg.inv(np.vstack([frame.matrix, [0, 0, 1]]))
    x, y, _ = inverse @ np.array([0.5, 0.5, 1.0])
    return float(x), float(y)


def test_pasting_back_changes_the_faces_and_leaves_the_rest_intact(people: framing.PeopleFramer) -> None:
    photo = group_photo(3, 200)
    frames = people.frames(photo)
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    out = np.asarray(framing.paste(photo, [(red, f) for f in frames]), dtype=np.int16)
    before = np.asarray(photo, dtype=np.int16)
    for frame in frames:
        x, y = (round(v) for v in cv_centre(frame))
        assert tuple(out[y, x]) == (255, 0, 0)  # the middle of each face is all restyled
    changed = np.abs(out - before).max(axis=2) > 0
    assert not changed[:, :10].any() and not changed[-10:].any()  # the ground around is untouched
    # No seam: at the edge of a pasted square the photo shows through almost unchanged.
    frame = frames[0]
    inverse = np.linalg.inv(np.vstack([frame.matrix, [0, 0, 1]]))
    for u, v in ((0.5, 0.005), (0.005, 0.5), (0.995, 0.5)):
        x, y, _ = inverse @ np.array([u, v, 1.0])
        assert np.abs(out[round(y), round(x)] - before[round(y), round(x)]).max() < 12


def test_a_photo_without_a_face_gets_no_frame(people: framing.PeopleFramer) -> None:
    assert people.frames(rgb(FIXTURES / "chelsea.png")) == []
    assert people.frames(Image.new("RGB", (640, 480), (120, 160, 200))) == []


def test_twenty_tiny_faces_are_refused_as_too_small(people: framing.PeopleFramer) -> None:
    photo = group_photo(20, 40, columns=5, gap=8)
    assert len(people.faces(photo)) >= 10  # seen ...
    with pytest.raises(ValueError, match="too small"):  # ... but too small to draw
        people.frames(photo)


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "B000208.jpg", "group"])
def test_the_first_look_finds_the_faces_the_whole_pyramid_finds(people: framing.PeopleFramer, name: str) -> None:
    """Skipping the small faces' levels first changes nothing for the faces worth drawing."""
    photo = group_photo(6, 120, columns=3) if name == "group" else rgb(FACES / name)
    boxes = [f.box for f in people.faces(photo)]
    assert boxes and boxes == [f.box for f in people.faces(photo, first_look=0)]


def test_a_crowd_gets_its_largest_faces_drawn_up_to_the_limit(people: framing.PeopleFramer) -> None:
    photo = group_photo(20, 100, columns=5)
    assert len(people.frames(photo)) == framing.MAX_FACES


def test_a_cat_face_is_framed_like_the_cat2dog_training_crops() -> None:
    framer = framing.framer_for("cat2dog", needs_face=False)
    assert isinstance(framer, framing.CatFramer)
    box = (300.0, 120.0, 420.0, 240.0)
    frame = framing.box_frame(box, framing.CAT_FACE_FRACTION, framing.CAT_CENTRE)
    corners = frame.matrix @ np.array([[box[0], box[2]], [box[1], box[3]], [1, 1]])
    assert corners[0, 1] - corners[0, 0] == pytest.approx(framing.CAT_FACE_FRACTION)
    assert corners.mean(axis=1) == pytest.approx(framing.CAT_CENTRE)


def test_a_cat_face_cut_off_by_the_picture_falls_back_to_the_centre_crop() -> None:
    """Chelsea's face fills the photo past its edges: the cascade finds no whole cat face."""
    framer = framing.CatFramer()
    assert framer.frames(rgb(FIXTURES / "chelsea.png")) == []
    assert framer.frames(Image.new("RGB", (400, 300), (120, 160, 200))) == []


def test_anime_and_the_other_styles_keep_the_centre_crop() -> None:
    for style in ("anime2selfie", "dog2cat", "horse2zebra", "photo2vangogh"):
        assert framing.framer_for(style, needs_face=False) is None
    frame = framing.centre_square(Image.new("RGB", (300, 180)))
    corners = frame.matrix @ np.array([[60, 240], [0, 180], [1, 1]])
    assert corners == pytest.approx(np.array([[0, 1], [0, 1]]))


def shifted(frame: framing.Frame, dx: float) -> framing.Frame:
    """The same crop moved `dx` photo pixels to the right."""
    matrix = frame.matrix.copy()
    matrix[:, 2] -= matrix[:, :2] @ np.array([dx, 0.0])
    return framing.Frame(matrix)


def test_a_clip_frame_follows_its_faces_part_of_the_way() -> None:
    before = framing.box_frame((100, 100, 200, 200), 0.5, (0.5, 0.5))  # a 200 px crop around (150, 150)
    (moved,) = framing.follow([before], [shifted(before, 10.0)])
    assert framing.centre(moved)[0] == pytest.approx(150 + framing.FOLLOW_WEIGHT * 10)
    (held,) = framing.follow([before], [])  # lost in this frame: held where it was
    assert np.allclose(held.matrix, before.matrix)
    far = shifted(before, 150.0)  # another face: not the one being followed
    assert np.allclose(framing.follow([before], [far])[0].matrix, before.matrix)


def test_frames_travel_as_text_and_hostile_text_is_refused() -> None:
    frames = [framing.box_frame((10, 20, 60, 70), 0.6, (0.5, 0.55)), framing.centre_square(Image.new("RGB", (90, 40)))]
    back = framing.frames_from_text(framing.frames_to_text(frames))
    assert all(np.allclose(a.matrix, b.matrix) for a, b in zip(frames, back))
    for text in ("", "[]", "nonsense", '{"a": 1}', "[[1,2,3]]", "[[0,0,0,0,0,0]]", '[[1,0,0,0,1,"x"]]',
                 "[[1e400,0,0,0,1,0]]", str([[1, 0, 0, 0, 1, 0]] * (framing.MAX_FACES + 1))):
        with pytest.raises(ValueError, match="X-Follow"):
            framing.frames_from_text(text)
