"""TorchServe handler for one U-GAT-IT direction: photo bytes in, stylized image bytes out.

Ships inside every `.mar` with `imaging.py`, `framing.py` and the model code
`networks.py`; TorchServe puts the archive's folder on `sys.path`, hence the
flat imports. The embedded engine (`serving/engine.py`) loads it the same way.
TorchServe wants exactly one class in this module: the handler.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

import acceleration
import framing
import imaging
from imaging import Options, Rejected
from networks import ResnetGenerator

logger = logging.getLogger(__name__)

Item = Rejected | tuple[torch.Tensor, Options]


class StyleHandler(BaseHandler):
    """Batch of requests -> per-request image or JSON error; a bad item fails alone."""

    def initialize(self, context: Any) -> None:
        """Rebuild the trained generator from model-config.yaml's arguments and the fp16 weights."""
        self.manifest = context.manifest
        self.config = context.model_yaml_config["handler"]
        gpu_id = context.system_properties.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        weights = os.path.join(
            context.system_properties["model_dir"], self.manifest["model"]["serializedFile"]
        )
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model = ResnetGenerator(**self.config["arch"])
        self.model.load_state_dict({k: v.float() for k, v in state.items()})
        self.model.to(self.device).eval()
        self.img_size = int(self.config["img_size"])
        # The generator is fully convolutional: it may draw at a larger size than
        # it trained at (export's --draw-size, chosen in bench/output_size.py).
        self.draw_size = int(self.config.get("draw_size", self.img_size))
        self.output_size = int(self.config.get("output_size", self.draw_size))
        # Choose (and compile, warm up, check) the fastest path before any request.
        prefer = os.environ.get("TOONBOT_INFERENCE") or self.config.get("inference", "auto")
        self.path = acceleration.choose(self.model, self.draw_size, self.device, prefer)
        self.framer = framing.FaceFramer() if self.config["needs_face"] else None
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> list[Item]:
        """Decode, frame and normalise each request; failures become `Rejected` in place."""
        items: list[Item] = []
        for idx, row in enumerate(data):
            try:
                options = self._options(idx, row)
                items.append((self._to_tensor(imaging.request_body(row)), options))
            except Rejected as err:
                items.append(err)
        return items

    def _options(self, idx: int, row: dict[str, Any]) -> Options:
        """Output size and format from form fields, else from X-Size / X-Format headers."""
        headers = {
            k.lower(): v for k, v in self.context.get_all_request_header(idx).items() if isinstance(v, str)
        }
        return imaging.parse_options(
            row.get("size", headers.get("x-size")), row.get("format", headers.get("x-format"))
        )

    def _to_tensor(self, data: bytes) -> torch.Tensor:
        """Bytes -> (3, S, S) in [-1, 1], framed like the training data."""
        img = imaging.decode(data)
        box = self.framer.frame(img) if self.framer else framing.centre_square(img)
        if box is None:
            raise Rejected("no_face", framing.NO_FACE, 422)
        size = (self.draw_size, self.draw_size)
        crop = img.resize(size, Image.LANCZOS, box=box, reducing_gap=3.0)
        pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32))
        return pixels.permute(2, 0, 1) / 127.5 - 1.0

    def inference(self, data: list[Item], *args: Any, **kwargs: Any) -> list[Item]:
        """Run the good items through the generator as one batch."""
        good = [i for i, item in enumerate(data) if not isinstance(item, Rejected)]
        logger.info("batch of %d (%d to the generator)", len(data), len(good))
        if not good:
            return data
        batch = torch.stack([data[i][0] for i in good]).to(self.device)
        with torch.inference_mode():
            fake = self.generate(batch)
        out = list(data)
        for j, i in enumerate(good):
            out[i] = (fake[j], data[i][1])
        return out

    def generate(self, real: torch.Tensor) -> torch.Tensor:
        """The generator alone: (N, 3, S, S) in [-1, 1] -> same shape, float32 on the CPU."""
        return self.path.run(real).float().cpu()

    def postprocess(self, data: list[Item]) -> list[bytes]:
        """Encode each image at the requested size; errors get their 4xx status and JSON."""
        out: list[bytes] = []
        for idx, item in enumerate(data):
            if isinstance(item, Rejected):
                self.context.set_response_status(item.status, item.kind, idx)
                self.context.set_response_content_type(idx, "application/json")
                out.append(item.to_json())
                continue
            fake, options = item
            pixels = ((fake.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            img = Image.fromarray(pixels.permute(1, 2, 0).numpy())
            side = options.size or self.output_size
            if side != self.draw_size:
                img = img.resize((side, side), Image.LANCZOS)
            self.context.set_response_content_type(idx, options.content_type)
            self.context.set_response_header(idx, "X-Model-Version", self.manifest["model"]["modelVersion"])
            out.append(imaging.encode(img, options.fmt))
        return out

    def describe_handle(self) -> str:
        """The style's catalogue entry, for TorchServe's `GET /models/NAME?customized=true`."""
        keys = ("title", "description", "needs_face", "img_size")
        return json.dumps({**{k: self.config[k] for k in keys}, "output_size": self.output_size})
