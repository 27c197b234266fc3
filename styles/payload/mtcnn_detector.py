"""MTCNN face detector (Zhang et al. 2016): boxes and five landmarks per face.

The three small networks' weights are the files facenet-pytorch ships in its
wheel (`facenet_pytorch/data/{pnet,rnet,onet}.pt`); nothing is downloaded.
facenet-pytorch itself is never imported: its code needs torchvision and its
metadata pins an old torch, so it is installed with `--no-deps` and only its
data files are read. The networks and the three-stage cascade follow its
`models/mtcnn.py` and `models/utils/detect_face.py`, with NMS in NumPy.
Ships inside every `.mar` beside `handler.py`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-net face probabilities (facenet-pytorch's defaults)
PYRAMID_FACTOR = 0.709
MISSING = (
    "facenet-pytorch's MTCNN weights are missing: install them with "
    "`pip install --no-deps facenet-pytorch==2.6.0` (make does)"
)


@dataclass(frozen=True)
class Face:
    """One face: its box (left, top, right, bottom), probability and landmarks in image pixels.

    Landmarks, (5, 2) as (x, y): the eye on the image's left, the other eye,
    the nose tip, the mouth corner on the image's left, the other corner.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """The box's longer side in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def weights_dir() -> Path:
    """The installed facenet_pytorch/data folder, found without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(MISSING)
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "onet.pt").is_file():
        raise RuntimeError(MISSING)
    return folder


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12 px windows at stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not face
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> regression (N, 4, h, w), probabilities (N, 2, h, w)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)


class RNet(nn.Module):
    """Refinement net on 24 px crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 24, 24) -> regression (N, 4), probabilities (N, 2)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # the Caffe weights' order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)


class ONet(nn.Module):
    """Output net on 48 px crops: final boxes and the five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x then 5 y, relative to the box

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, 48, 48) -> regression (N, 4), landmarks (N, 10), probabilities (N, 2)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression; overlap over the union, or over the smaller box."""
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square on its longer side, about the same centre."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w / 2 - side / 2
    out[:, 1] = boxes[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (fractions of the box's width and height)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], axis=1)
    return out


def _normalise(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in about [-1, 1], as MTCNN was trained."""
    return (torch.from_numpy(pixels).permute(0, 3, 1, 2).float() - 127.5) * 0.0078125


def _crops(rgb: np.ndarray, boxes: np.ndarray, side: int) -> torch.Tensor:
    """Each box cut from the picture (the part inside it; the rest zero) and resized to side x side."""
    height, width = rgb.shape[:2]
    out = np.zeros((len(boxes), side, side, 3), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx, sy, ex, ey = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
        if ex > sx and ey > sy:
            patch[sy - y1 : ey - y1, sx - x1 : ex - x1] = rgb[sy:ey, sx:ex]
        out[k] = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
    return _normalise(out)


class MTCNN:
    """Detects faces with landmarks in an RGB picture (CPU, float32)."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or weights_dir()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True))
            net.eval()

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, min_face: float = 20, skip_under: float = 0) -> list[Face]:
        """Every face at least `min_face` px in an (H, W, 3) uint8 picture, most probable first.

        `skip_under` leaves out the pyramid's levels for faces under that many pixels, the
        costliest ones; the other levels are those `min_face` gives, so larger faces come out alike.
        """
        boxes = self._propose(rgb, min_face, skip_under)
        if len(boxes):
            boxes = self._refine(rgb, boxes)
        if not len(boxes):
            return []
        return self._output(rgb, boxes)

    def _propose(self, rgb: np.ndarray, min_face: float, skip_under: float) -> np.ndarray:
        """Stage 1: P-net over an image pyramid -> candidate squares (x1, y1, x2, y2, score)."""
        height, width = rgb.shape[:2]
        scale = 12.0 / min_face
        while 12.0 / scale < skip_under:
            scale *= PYRAMID_FACTOR
        found = []
        while min(height, width) * scale >= 12:
            size = (int(width * scale + 1), int(height * scale + 1))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            reg, prob = self.pnet(_normalise(small[None]))
            prob, reg = prob[0, 1].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= THRESHOLDS[0])
            if len(ys):
                # Each output cell is a 12 px window at stride 2 in the scaled picture.
                x1, y1 = np.floor((2 * xs + 1) / scale), np.floor((2 * ys + 1) / scale)
                x2, y2 = np.floor((2 * xs + 12) / scale), np.floor((2 * ys + 12) / scale)
                cand = np.stack([x1, y1, x2, y2, prob[ys, xs], *reg[:, ys, xs]], axis=1)
                found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
            scale *= PYRAMID_FACTOR
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        w, h = cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]
        shifted = cand[:, :4] + cand[:, 5:9] * np.stack([w, h, w, h], axis=1)
        return _square(np.concatenate([shifted, cand[:, 4:5]], axis=1))

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-net rejects most candidates and tightens the rest."""
        boxes = np.trunc(boxes)
        reg, prob = self.rnet(_crops(rgb, boxes, 24))
        score = prob[:, 1].numpy()
        keep = score > THRESHOLDS[1]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg = reg.numpy()[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(_regress(boxes[pick], reg[pick]))

    def _output(self, rgb: np.ndarray, boxes: np.ndarray) -> list[Face]:
        """Stage 3: O-net's final boxes and landmarks."""
        boxes = np.trunc(boxes)
        reg, points, prob = self.onet(_crops(rgb, boxes, 48))
        score = prob[:, 1].numpy()
        keep = score > THRESHOLDS[2]
        boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
        reg, points = reg.numpy()[keep], points.numpy()[keep]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = w * points[:, :5] + boxes[:, 0:1] - 1
        ys = h * points[:, 5:] + boxes[:, 1:2] - 1
        boxes = _regress(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, by_min=True)
        return [
            Face(tuple(float(v) for v in boxes[i, :4]), float(boxes[i, 4]), np.stack([xs[i], ys[i]], axis=1))
            for i in pick
        ]
