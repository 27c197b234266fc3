"""TorchServe handler for one U-GAT-IT direction: photo bytes in, stylized image bytes out.

Ships inside every `.mar` with `imaging.py`, `framing.py`, `mtcnn_detector.py`, `jobs.py`, `upscaler.py` and the
model code `networks.py`; TorchServe puts the archive's folder on `sys.path`, hence the
flat imports. The embedded engine (`serving/engine.py`) loads it the same way.
TorchServe wants exactly one class in this module: the handler.
"""

from __future__ import annotations

import base64
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
import upscaler
from imaging import Options, Rejected
from jobs import Job
from networks import ResnetGenerator

logger = logging.getLogger(__name__)

GROUP_SIDE = 2048  # face styles work on a copy at most this large: it bounds a group photo's memory
# A large JPEG is decoded at a reduced scale (imaging.decode) that keeps this much of its long side for a
# style that frames faces (a 12-megapixel phone photo comes out at 2,016 px), and four times the
# generator's square on its short side for a centre crop: against the whole decode's square that is
# 41 dB PSNR at worst, twice the square only 31 dB (bench/request_cost.py).
DECODE_SIDE, DECODE_MARGIN = GROUP_SIDE * 15 // 16, 4
CHUNK = 4  # faces per generator call: a group photo's eight faces never make one big batch
FACES_HEADER = "X-Faces"  # how many faces were drawn, for the reply and the usage log
# A clip drawn frame by frame: each answer says where its faces were framed (X-Frames), and the
# next frame's request hands that back (X-Follow), so the faces stay steady in their squares.
FRAMES_HEADER, FOLLOW_HEADER = "X-Frames", "X-Follow"
PREVIEW = "preview.jpg"  # the style on a public-domain picture, before | after (styles/preview.py)


Item = Rejected | Job


class StyleHandler(BaseHandler):
    """Batch of requests -> per-request image or JSON error; a bad item fails alone."""

    def initialize(self, context: Any) -> None:
        """Rebuild the trained generator from model-config.yaml's arguments and the fp16 (and int8) weights."""
        self.manifest = context.manifest
        self.config = context.model_yaml_config["handler"]
        gpu_id = context.system_properties.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        weights = os.path.join(
            context.system_properties["model_dir"], self.manifest["model"]["serializedFile"]
        )
        # Mapped, and assigned rather than copied into a built network: an int8 layer of the full
        # model (268 MB, `fc0_weight`) is never held twice; fp16 weights become float32.
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        with torch.device("meta"):
            model = ResnetGenerator(**self.config["arch"])
        model.load_state_dict({k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()},
                              assign=True)
        model.to(self.device).eval()
        self.img_size = int(self.config["img_size"])
        # The generator is fully convolutional: it may draw at a larger size than
        # it trained at (export's --draw-size-factor, compared in bench/output_size.py);
        # replies default to that size.
        self.draw_size = int(self.config.get("draw_size", self.img_size))
        # Eager float32 answers at once; faster paths are built, checked and swapped in
        # behind it (a worker never misses TorchServe's start-up deadline compiling).
        # The handler keeps no reference to the model: a compiled graph holds its own
        # weights, and the eager ones are freed once it has been swapped in.
        prefer = os.environ.get("TOONBOT_INFERENCE") or self.config.get("inference", "auto")
        model_dir = context.system_properties["model_dir"]  # its hash keys the compiled graphs on disk
        self.path = acceleration.Accelerated(model, self.draw_size, self.device, prefer, model_dir)
        # A style may enlarge what the generator draws with a learned upscaler (model-config's
        # `upscaler`); replies then default to that size, and it runs on the same kind of paths.
        self.upscaler: acceleration.Accelerated | None = None
        self.output_size = self.draw_size
        if "upscaler" in self.config:
            net = upscaler.from_config(self.config["upscaler"])
            self.output_size = self.draw_size * net.scale
            self.upscaler = acceleration.Accelerated(net, self.draw_size, self.device, prefer, model_dir,
                                                     part="upscaler", floors=upscaler.PSNR_FLOORS)
        # A style whose target is a photo may serve best enlarged by resampling alone (the learned
        # upscalers painted anime2selfie's faces too crisp and less like photos): `output_size`.
        self.output_size = int(self.config.get("output_size", self.output_size))
        self.framer = framing.framer_for(self.manifest["model"]["modelName"], bool(self.config["needs_face"]))
        self.needs_face = bool(self.config["needs_face"])
        self.initialized = True

    def preprocess(self, data: list[dict[str, Any]]) -> list[Item]:
        """Decode, frame and normalise each request; failures become `Rejected` in place."""
        items: list[Item] = []
        for idx, row in enumerate(data):
            try:
                options = self._options(idx, row)
                follow = self._follow(idx)
                items.append(self._job(self._decode(imaging.request_body(row)), options, follow))
            except Rejected as err:
                items.append(err)
        return items

    def _decode(self, data: bytes) -> Image.Image:
        """The photo, decoded no larger than this style needs (see DECODE_SIDE)."""
        if self.framer is None:
            return imaging.decode(data, min_short=DECODE_MARGIN * self.draw_size)
        return imaging.decode(data, min_long=DECODE_SIDE)

    def _headers(self, idx: int) -> dict[str, str]:
        return {k.lower(): v for k, v in self.context.get_all_request_header(idx).items() if isinstance(v, str)}

    def _options(self, idx: int, row: dict[str, Any]) -> Options:
        """Output size and format from form fields, else from X-Size / X-Format headers."""
        headers = self._headers(idx)
        return imaging.parse_options(
            row.get("size", headers.get("x-size")), row.get("format", headers.get("x-format")),
            row.get("compare", headers.get("x-compare")), row.get("upscale", headers.get("x-upscale")),
        )

    def _follow(self, idx: int) -> list[framing.Frame] | None:
        """The faces of the clip's previous frame (X-Follow), if this is a clip's later frame."""
        text = self._headers(idx).get(FOLLOW_HEADER.lower())
        if not text or self.framer is None:
            return None
        try:
            return framing.frames_from_text(text)
        except ValueError as err:
            raise Rejected("bad_option", str(err)) from None

    def _job(self, img: Image.Image, options: Options, follow: list[framing.Frame] | None) -> Job:
        """Frame the picture like the training data: one square, or one per face of a group photo;
        a clip's later frame follows the faces of the frame before."""
        if self.framer is None:
            return Job(self._crops(img, [framing.centre_square(img)]), options, faces=0)
        img = _shrunk(img, GROUP_SIDE)
        try:
            frames = self.framer.frames(img)
        except ValueError as err:  # faces, but all too small to draw
            if follow is None:
                raise Rejected("no_face", str(err), 422) from None
            frames = []
        if follow is not None:
            frames = framing.follow(follow, frames)
        if not frames and self.needs_face:
            raise Rejected("no_face", framing.NO_FACE, 422)
        if not frames:  # e.g. no cat face found: frame it as the training data was, centred
            return Job(self._crops(img, [framing.centre_square(img)]), options, faces=0)
        photo = img if len(frames) > 1 else None
        return Job(self._crops(img, frames), options, faces=len(frames), photo=photo, frames=frames)

    def _crops(self, img: Image.Image, frames: list[framing.Frame]) -> torch.Tensor:
        """(k, 3, S, S) in [-1, 1]: each frame cut out at the generator's size."""
        crops = [np.asarray(framing.crop(img, f, self.draw_size), dtype=np.float32) for f in frames]
        return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2) / 127.5 - 1.0

    def inference(self, data: list[Item], *args: Any, **kwargs: Any) -> list[Item]:
        """Run every crop of the good items through the generator (and the upscaler), CHUNK at a time."""
        jobs = [item for item in data if isinstance(item, Job)]
        logger.info("batch of %d (%d to the generator)", len(data), len(jobs))
        if not jobs:
            return data
        crops = torch.cat([job.crops for job in jobs])
        with torch.inference_mode():
            fake = torch.cat([self.generate(chunk.to(self.device)) for chunk in crops.split(CHUNK)])
            for job, drawn in zip(jobs, fake.split([len(job.crops) for job in jobs])):
                job.drawn = self.upscale(drawn) if job.options.upscale else drawn
        return data

    def generate(self, real: torch.Tensor) -> torch.Tensor:
        """The generator alone: (N, 3, S, S) in [-1, 1] -> same shape, float32 on the CPU."""
        return self.path.run(real).float().cpu()

    def upscale(self, fake: torch.Tensor) -> torch.Tensor:
        """The style's upscaler, if it has one: (N, 3, S, S) in [-1, 1] -> (N, 3, sS, sS), float32 on the CPU.

        One square at a time: at 4x the side, a batch would hold 16x the activations.
        """
        if self.upscaler is None:
            return fake
        return torch.cat([self.upscaler.run(square[None].to(self.device)).float().cpu() for square in fake])

    def postprocess(self, data: list[Item]) -> list[bytes]:
        """Encode each image at the requested size; errors get their 4xx status and JSON."""
        out: list[bytes] = []
        for idx, item in enumerate(data):
            if isinstance(item, Rejected):
                self.context.set_response_status(item.status, item.kind, idx)
                self.context.set_response_content_type(idx, "application/json")
                out.append(item.to_json())
                continue
            img = self._picture(item)
            self.context.set_response_content_type(idx, item.options.content_type)
            self.context.set_response_header(idx, "X-Model-Version", self.manifest["model"]["modelVersion"])
            self.context.set_response_header(idx, FACES_HEADER, str(item.faces))
            if item.frames:
                self.context.set_response_header(idx, FRAMES_HEADER, framing.frames_to_text(item.frames))
            out.append(imaging.encode(img, item.options.fmt))
        return out

    def _picture(self, job: Job) -> Image.Image:
        """The reply: the restyled square, or the group photo with every face restyled in place;
        with `compare`, the same view of the original on its left.

        A square comes at the requested side (default: the style's, what the model draws upscaled as it says);
        a group photo keeps its own size, its long side cut to the requested one.
        """
        assert job.drawn is not None
        squares = _images(job.drawn)
        if job.photo is not None:
            side = job.options.size or GROUP_SIDE
            after = _shrunk(framing.paste(job.photo, list(zip(squares, job.frames))), side)
            before = job.photo
        else:
            # The style's reply size; a clip's frame (no upscaling asked) comes as the generator drew it.
            side = job.options.size or (self.output_size if job.options.upscale else squares[0].width)
            after = squares[0] if side == squares[0].width else squares[0].resize((side, side), Image.LANCZOS)
            before = _images(job.crops[:1])[0]  # the square the generator saw
        return imaging.side_by_side(before, after) if job.options.compare else after

    def describe_handle(self) -> str:
        """The style's catalogue entry and preview (base64 JPEG, where the archive has one: export draws it),
        for TorchServe's `GET /models/NAME?customized=true`."""
        keys = ("title", "description", "needs_face", "img_size")
        meta = {**{k: self.config[k] for k in keys}, "output_size": self.output_size}
        preview = os.path.join(self.context.system_properties["model_dir"], PREVIEW)
        if os.path.exists(preview):
            with open(preview, "rb") as f:
                meta["preview"] = base64.b64encode(f.read()).decode("ascii")
        return json.dumps(meta)


def _images(batch: torch.Tensor) -> list[Image.Image]:
    """(N, 3, S, S) in [-1, 1] -> N RGB pictures."""
    pixels = ((batch.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def _shrunk(img: Image.Image, side: int) -> Image.Image:
    """`img` scaled down (never up) so its long side is at most `side`."""
    scale = side / max(img.size)
    if scale >= 1.0:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS,
                      reducing_gap=3.0)
