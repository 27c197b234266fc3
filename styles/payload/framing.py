"""Frame a photo the way the training data was framed, before it meets the generator.

Ships inside every `.mar` beside `handler.py`. Every detector's weights come
with an installed package, so nothing is downloaded at run time: people by
MTCNN (`mtcnn_detector.py`, facenet-pytorch's data files), cats by the Haar cascade
OpenCV 4 bundles; anime faces keep the centre crop (animeface finds none with
today's Pillow). The choices are measured in `bench/face_detectors.py`.

A face crop is a similarity transform (level the eyes, scale, place) from the
photo to a square: `Frame.matrix` maps photo pixels to crop coordinates in
[0, 1], so the restyled square can be warped back onto the photo.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

try:  # flat inside a .mar: TorchServe puts the archive's folder on sys.path
    import mtcnn_detector as mtcnn
except ModuleNotFoundError:  # imported from the source tree (tests, bench)
    from styles.payload import mtcnn_detector as mtcnn

NO_FACE = (
    "I couldn't find a face in that photo. Try one where the face is clearly visible: turned towards "
    "the camera, not covered or cut off at an edge, in even light. Or pick a style that needs no face "
    "with /styles."
)
FACES_TOO_SMALL = (
    "The faces in that photo are too small for me to draw (each needs about 48 pixels across). "
    "Send a closer photo, or crop it around the faces."
)

# Where the landmarks sit, on average, in the selfie2anime training selfies:
# bench/face_framing.py ran PeopleFramer.faces over the first 500 trainA
# pictures (256 px) and averaged each landmark over the 495 with exactly one
# face, as fractions of the side. Order: the eye on the left of the picture,
# the other eye, nose tip, mouth corner on the left, the other corner.
SELFIE_LANDMARKS = np.array(
    [[0.3611, 0.3415], [0.6444, 0.3489], [0.5003, 0.5238], [0.3732, 0.6368], [0.6110, 0.6424]]
)
# Cat faces in cat2dog's first 500 trainA pictures, measured the same way with
# CatFramer.largest (found in 441): the box's side and centre as fractions of the side.
CAT_FACE_FRACTION, CAT_CENTRE = 0.594, (0.492, 0.565)

DETECT_SIDE = 1024  # detectors see a copy at most this large: bounded time on any photo
MIN_DETECT = 20  # MTCNN's smallest face, in the detection copy's pixels
MIN_FACE = 48  # smallest face worth drawing, in the working picture's pixels (eye-to-mouth x 2.2)
# MTCNN looks for faces of FIRST_LOOK x MIN_FACE or more first: a face's box is at least 1.1 times its
# face_size (bench/request_cost.py), and the pyramid's small scales take most of MTCNN's time.
FIRST_LOOK = 0.8
MAX_FACES = 8  # a group photo gets at most this many faces drawn, the largest first
MIN_SCORE = 0.9  # MTCNN's final probability: no-person pictures reach 0.88 at most (bench/face_detectors.py)
CAT_CASCADE = "haarcascade_frontalcatface_extended.xml"
STYLE_FRAMERS = {"cat2dog": "cat"}  # styles that need no face but frame one when they find it
FEATHER = 0.12  # share of the crop's side over which a pasted face fades into the photo


@dataclass(frozen=True)
class Frame:
    """Where one crop comes from: a 2x3 affine map from photo pixels to crop coordinates in [0, 1]."""

    matrix: np.ndarray

    def scaled(self, side: int) -> np.ndarray:
        """The map to a crop of `side` pixels."""
        return self.matrix * side

    @property
    def size(self) -> float:
        """The crop's side in photo pixels."""
        return 1.0 / math.hypot(self.matrix[0, 0], self.matrix[0, 1])


# Steady framing across the frames of a clip (X-Follow): each face's crop moves this share of the
# way to where it is detected now, the rest stays where the frame before had it. Detections jitter
# by a few pixels from frame to frame; unsmoothed, the face shakes in its square.
FOLLOW_WEIGHT = 0.35
FOLLOW_RADIUS = 0.5  # a detection further than this share of the crop's side is another face
NO_FRAMES = (
    "X-Follow must be the X-Frames header of the clip's previous frame: a JSON list of faces, "
    f"at most {MAX_FACES}, each six numbers."
)


def centre(frame: Frame) -> np.ndarray:
    """Where the crop's centre lies in the photo."""
    inverse = cv2.invertAffineTransform(frame.matrix)
    return inverse @ np.array([0.5, 0.5, 1.0])


def follow(previous: list[Frame], found: list[Frame]) -> list[Frame]:
    """The faces of the clip's frame before, each moved part of the way to its detection in this
    frame (FOLLOW_WEIGHT), or held where it was when this frame lost it (a turned head, motion
    blur). The clip keeps the faces its first frame had, so every frame's reply looks alike."""
    moved = []
    for face in previous:
        here = centre(face)
        near = min(found, key=lambda f: float(np.linalg.norm(centre(f) - here)), default=None)
        if near is not None and np.linalg.norm(centre(near) - here) <= FOLLOW_RADIUS * face.size:
            moved.append(Frame(FOLLOW_WEIGHT * near.matrix + (1 - FOLLOW_WEIGHT) * face.matrix))
        else:
            moved.append(face)
    return moved


def frames_to_text(frames: list[Frame]) -> str:
    """The X-Frames response header: each face's 2x3 map, for the clip's next frame to follow."""
    return json.dumps([[round(float(v), 8) for v in f.matrix.ravel()] for f in frames], separators=(",", ":"))


def frames_from_text(text: str) -> list[Frame]:
    """An X-Follow request header back into frames; ValueError(NO_FRAMES) for anything else."""
    try:
        values = json.loads(text)
        matrices = [np.array(v, dtype=np.float64).reshape(2, 3) for v in values]
    except (ValueError, TypeError):
        raise ValueError(NO_FRAMES) from None
    if not 0 < len(matrices) <= MAX_FACES or any(
        not np.isfinite(m).all() or np.abs(m).max() > 1e6 or abs(np.linalg.det(m[:, :2])) < 1e-12
        for m in matrices
    ):
        raise ValueError(NO_FRAMES)
    return [Frame(m) for m in matrices]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + scale + shift taking the eyes of `src` level and its eyes and mouth onto `dst`'s.

    The angle is the eye line's alone, so the eyes come out level; the scale
    uses eye distance and eye-to-mouth distance together, so a face turned
    sideways (narrower eyes) or nodding (shorter face) keeps its size.
    """
    def parts(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        eyes, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
        return p[1] - p[0], eyes, mouth

    s_line, s_eyes, s_mouth = parts(src)
    d_line, d_eyes, d_mouth = parts(dst)
    angle = math.atan2(d_line[1], d_line[0]) - math.atan2(s_line[1], s_line[0])
    scale = (np.linalg.norm(d_line) + np.linalg.norm(d_mouth - d_eyes)) / (
        np.linalg.norm(s_line) + np.linalg.norm(s_mouth - s_eyes)
    )
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    centre_src, centre_dst = (s_eyes + s_mouth) / 2, (d_eyes + d_mouth) / 2
    return np.hstack([rot, (centre_dst - rot @ centre_src)[:, None]])


def box_frame(box: tuple[float, float, float, float], fraction: float, centre: tuple[float, float]) -> Frame:
    """An upright square in which `box` spans `fraction` of the side with its centre at `centre`."""
    left, top, right, bottom = box
    scale = fraction / max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return Frame(np.array([[scale, 0.0, centre[0] - scale * cx], [0.0, scale, centre[1] - scale * cy]]))


def centre_square(img: Image.Image) -> Frame:
    """The centred square on the shorter side, as the unpaired datasets were cropped."""
    side = min(img.size)
    return box_frame(((img.width - side) / 2, (img.height - side) / 2, (img.width + side) / 2,
                      (img.height + side) / 2), 1.0, (0.5, 0.5))


def crop(img: Image.Image, frame: Frame, side: int) -> Image.Image:
    """The framed square at `side` px; what lies outside the photo is its edge's colours, out of focus.

    Not mirrored in: a selfie cut off under the chin then showed a second mouth
    upside down below the first, and the generator drew both. A large photo is
    first shrunk (Lanczos) to about the crop's scale, so the warp never
    minifies and aliases.
    """
    matrix = frame.scaled(side)
    scale = side / frame.size
    if scale < 0.9:
        left, top, right, bottom = _photo_box(frame, img.size, pad=2 / scale)
        if right - left >= 2 and bottom - top >= 2:
            small = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
            img = img.resize(small, Image.LANCZOS, box=(left, top, right, bottom), reducing_gap=3.0)
            fx, fy = small[0] / (right - left), small[1] / (bottom - top)
            shrink = np.array([[fx, 0, -left * fx], [0, fy, -top * fy], [0, 0, 1]])
            matrix = matrix @ np.linalg.inv(shrink)
    pixels = cv2.warpAffine(np.asarray(img), matrix, (side, side), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    corners = cv2.invertAffineTransform(matrix) @ np.array([[0, side - 1, 0, side - 1], [0, 0, side - 1, side - 1],
                                                             [1, 1, 1, 1]], dtype=np.float64)
    if corners.min() >= 0 and corners[0].max() <= img.width - 1 and corners[1].max() <= img.height - 1:
        return Image.fromarray(pixels)  # the square lies within the photo (the usual case)
    # The photo fades into a blur of its replicated edge over a few pixels, so no seam is drawn either.
    inside = cv2.warpAffine(np.ones((img.height, img.width), np.float32), matrix, (side, side), flags=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(pixels, (0, 0), side / 24)
    keep = (cv2.GaussianBlur(inside, (0, 0), side / 64) * inside)[..., None]
    return Image.fromarray(np.clip(pixels * keep + soft * (1.0 - keep) + 0.5, 0, 255).astype(np.uint8))


def paste(photo: Image.Image, faces: list[tuple[Image.Image, Frame]]) -> Image.Image:
    """`photo` with each restyled square warped back where it came from, fading out at its edges.

    Each face is blended within its own bounds only, so time and memory follow
    the faces' area, not the photo's.
    """
    out = np.asarray(photo, dtype=np.float32).copy()
    for styled, frame in sorted(faces, key=lambda f: f[1].size):  # the largest face ends on top
        left, top, right, bottom = _photo_box(frame, photo.size, pad=2.0)
        if right <= left or bottom <= top:
            continue
        side = styled.width
        inverse = cv2.invertAffineTransform(frame.scaled(side))
        inverse[:, 2] -= (left, top)
        size = (right - left, bottom - top)
        drawn = cv2.warpAffine(np.asarray(styled, dtype=np.float32), inverse, size, flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(_feather(side), inverse, size, flags=cv2.INTER_LINEAR)[..., None]
        region = out[top:bottom, left:right]
        out[top:bottom, left:right] = region * (1.0 - alpha) + drawn * alpha
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def _photo_box(frame: Frame, size: tuple[int, int], pad: float) -> tuple[int, int, int, int]:
    """The part of a photo of `size` that the framed square covers, `pad` px wider, clipped to the photo."""
    corners = cv2.invertAffineTransform(frame.matrix) @ np.array([[0, 1, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    left, top = (max(0, math.floor(corners[i].min() - pad)) for i in (0, 1))
    right = min(size[0], math.ceil(corners[0].max() + pad))
    bottom = min(size[1], math.ceil(corners[1].max() + pad))
    return left, top, right, bottom


def _feather(side: int) -> np.ndarray:
    """A rounded-square mask: 1 inside, falling smoothly to 0 at the edges over FEATHER of the side.

    Rounded (a superellipse), so no square corner of restyled background shows.
    """
    t = (np.arange(side) + 0.5) / side * 2 - 1  # -1 .. 1 across the square
    radius = (t[:, None] ** 4 + t[None, :] ** 4) ** 0.25
    ramp = np.clip((1 - radius) / (2 * FEATHER), 0, 1)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)  # smoothstep: no kink where the fade starts


def _detection_copy(img: Image.Image) -> tuple[np.ndarray, float]:
    """The picture as RGB pixels at most DETECT_SIDE on its long side, and the scale used."""
    scale = min(1.0, DETECT_SIDE / max(img.size))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    return np.asarray(img), scale


class PeopleFramer:
    """People's faces by MTCNN, framed like the selfie2anime training selfies."""

    def __init__(self) -> None:
        self.detector = mtcnn.MTCNN()

    def faces(self, img: Image.Image, first_look: float = FIRST_LOOK * MIN_FACE) -> list[mtcnn.Face]:
        """Faces MTCNN is sure of, in `img`'s pixels, largest first.

        It looks for faces of `first_look` pixels or more first (those worth drawing); finding none,
        for the small ones too (to say that they are too small), then on turned copies.
        """
        pixels, scale = _detection_copy(img)
        first = first_look * scale
        found = self._sure(pixels, first)
        if not found and first > MIN_DETECT:
            found = self._sure(pixels)
        found = found or self._second_look(pixels, first)
        faces = [mtcnn.Face(tuple(v / scale for v in f.box), f.score, f.landmarks / scale) for f in found]
        return sorted(faces, key=face_size, reverse=True)

    def _sure(self, pixels: np.ndarray, skip_under: float = 0) -> list[mtcnn.Face]:
        """MTCNN's faces at MIN_SCORE or more: below it, objects and animals outnumber faces."""
        return [f for f in self.detector.detect(pixels, MIN_DETECT, skip_under) if f.score >= MIN_SCORE]

    def _second_look(self, pixels: np.ndarray, skip_under: float) -> list[mtcnn.Face]:
        """The most probable face on a copy with a grey margin, upright and turned 20 degrees each way.

        A selfie cut off at the edges or leaning far is missed at first; the
        margin and the turn find most of them (bench/face_detectors.py).
        """
        height, width = pixels.shape[:2]
        pad = 0.3 * max(height, width)
        size = (round(width + 2 * pad), round(height + 2 * pad))
        found = []
        for angle in (0.0, 20.0, -20.0):
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
            matrix[:, 2] += pad
            view = cv2.warpAffine(pixels, matrix, size, flags=cv2.INTER_LINEAR, borderValue=(128, 128, 128))
            found += [_moved(f, cv2.invertAffineTransform(matrix)) for f in self._sure(view, skip_under)]
        return sorted(found, key=lambda f: f.score)[-1:]

    def frames(self, img: Image.Image) -> list[Frame]:
        """A frame per face big enough to draw (at most MAX_FACES, largest first); [] without faces.

        Raises ValueError(FACES_TOO_SMALL) when there are faces but none is big enough.
        """
        faces = self.faces(img)
        big = [f for f in faces if face_size(f) >= MIN_FACE][:MAX_FACES]
        if faces and not big:
            raise ValueError(FACES_TOO_SMALL)
        return [Frame(similarity(f.landmarks, SELFIE_LANDMARKS)) for f in big]


def _moved(face: mtcnn.Face, matrix: np.ndarray) -> mtcnn.Face:
    """`face` carried by a 2x3 affine map: landmarks exactly, the box as the bounds of its corners."""
    left, top, right, bottom = face.box
    corners = matrix @ np.array([[left, right, left, right], [top, top, bottom, bottom], [1, 1, 1, 1]])
    points = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    box = (corners[0].min(), corners[1].min(), corners[0].max(), corners[1].max())
    return mtcnn.Face(tuple(float(v) for v in box), face.score, points)


def face_size(face: mtcnn.Face) -> float:
    """A face's size from its landmarks, about its width: 2.2 x the eye-to-mouth distance."""
    p = face.landmarks
    return 2.2 * float(np.linalg.norm((p[0] + p[1]) / 2 - (p[3] + p[4]) / 2))


class CatFramer:
    """The largest cat face (OpenCV's bundled cat cascade), framed like cat2dog's training crops."""

    def __init__(self) -> None:
        self.detector = cv2.CascadeClassifier(cv2.data.haarcascades + CAT_CASCADE)
        self.lock = threading.Lock()  # a cascade keeps its image pyramid in itself: one picture at a time
        if self.detector.empty():
            raise RuntimeError(f"OpenCV's bundled {CAT_CASCADE} is missing; opencv-python-headless<5 ships it")

    def largest(self, img: Image.Image) -> tuple[float, float, float, float] | None:
        """The largest cat face's box in `img`'s pixels, or None.

        No histogram equalisation and 4 neighbours: on cat2dog's test cats that
        finds 32 of 35 faces and nothing on 60 horses and people (equalised: 25).
        """
        pixels, scale = _detection_copy(img)
        grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
        side = max(24, min(grey.shape) // 8)
        with self.lock:
            found = self.detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4, minSize=(side, side))
        if len(found) == 0:
            return None
        x, y, w, h = (float(v) / scale for v in max(found, key=lambda f: f[2] * f[3]))
        return (x, y, x + w, y + h)

    def frames(self, img: Image.Image) -> list[Frame]:
        """One frame around the largest cat face, or [] when none is found."""
        box = self.largest(img)
        return [] if box is None else [box_frame(box, CAT_FACE_FRACTION, CAT_CENTRE)]


def framer_for(style: str, needs_face: bool) -> PeopleFramer | CatFramer | None:
    """The framer a style's input gets: people's faces, cat faces, or None for the centre crop."""
    if needs_face:
        return PeopleFramer()
    return CatFramer() if STYLE_FRAMERS.get(style) == "cat" else None
