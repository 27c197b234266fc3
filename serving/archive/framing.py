"""Frame a photo the way the training data was framed, before it meets the generator.

Ships inside every `.mar` beside `handler.py`. Face detection uses the Haar
cascade that opencv-python-headless 4.x bundles (`cv2.data`), so nothing is
downloaded at run time.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

NO_FACE = (
    "I couldn't find a face in that photo. Try a closer selfie with your face "
    "centred, looking at the camera, in good light."
)

# Measured with this detector on the selfie2anime selfies: the face box spans
# 72% of the picture's width, centred horizontally, its centre 5% of the side
# above the picture's centre.
FACE_FRACTION = 0.72
FACE_RAISE = 0.05
DETECT_SIDE = 640  # detect on a copy this size: faster, and the box is only a frame
CASCADE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # left, upper, right, lower (PIL's crop box)


class FaceFramer:
    """Finds the largest face and frames a square around it."""

    def __init__(self) -> None:
        self.detector = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if self.detector.empty():
            raise RuntimeError(f"OpenCV's bundled {CASCADE} is missing; opencv-python-headless<5 ships it")

    def largest_face(self, img: Image.Image) -> Box | None:
        """The largest detected face as a box in `img`'s pixels, or None."""
        scale = min(1.0, DETECT_SIDE / max(img.size))
        small = img.convert("L")
        if scale < 1.0:
            small = small.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        grey = cv2.equalizeHist(np.asarray(small))
        min_side = max(20, min(grey.shape) // 10)
        faces = self.detector.detectMultiScale(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return (round(x / scale), round(y / scale), round((x + w) / scale), round((y + h) / scale))

    def frame(self, img: Image.Image) -> Box | None:
        """A square around the largest face, framed like the training selfies; None without a face."""
        face = self.largest_face(img)
        if face is None:
            return None
        left, upper, right, lower = face
        side = (right - left) / FACE_FRACTION
        cx = (left + right) / 2
        cy = (upper + lower) / 2 + FACE_RAISE * side
        return square_within(img.size, cx, cy, side)


def centre_square(img: Image.Image) -> Box:
    """The centred square on the shorter side, as the unpaired datasets were cropped."""
    return square_within(img.size, img.width / 2, img.height / 2, min(img.size))


def square_within(size: tuple[int, int], cx: float, cy: float, side: float) -> Box:
    """A square of about `side` centred near (cx, cy), shrunk and shifted to fit the picture."""
    width, height = size
    side = round(min(side, width, height))
    left = min(max(round(cx - side / 2), 0), width - side)
    upper = min(max(round(cy - side / 2), 0), height - side)
    return (left, upper, left + side, upper + side)
