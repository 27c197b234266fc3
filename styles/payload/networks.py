"""U-GAT-IT networks (Kim et al., ICLR 2020, arXiv 1907.10830).

This file is self-contained (torch only) because the exporter copies it into
every `.mar` archive: serving rebuilds exactly the trained generator from it.

Module and attribute names follow the authors' PyTorch release so that their
checkpoints load key for key. Paper notation -> code:
  G_s->t: `ResnetGenerator`; encoder E_s: `DownBlock`; auxiliary classifier
  eta_s (CAM) with weights w: `gap_fc` / `gmp_fc`; attention feature maps
  a_s = w * E_s: the re-weighted bottleneck; AdaLIN: `AdaILN`; LIN: `ILN`;
  D_t with its auxiliary classifier eta_Dt: `Discriminator`; rho: `rho`.

`ResnetGenerator(tf_compat=True)` is the authors' TensorFlow graph instead
(taki0112/UGATIT, whose checkpoints `training.official_tf` imports): biased
convolutions, affine instance norms, biased variances, a stride-2 padding of
one pixel at the top and left only, an MLP with biases, and a CAM whose
attention weights are a variable of their own plus its bias.

`ResnetGenerator(fc0_weight="int8")` keeps the full model's MLP first layer
(`FC.0`) in int8 with one scale per output feature (`Int8Linear`): a quarter of
float32's memory, and never dequantised whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_DOWNSAMPLING = 2
FC0_WEIGHTS = ("float", "int8")  # how ResnetGenerator stores its first MLP layer


def _layer_instance_norm(
    x: torch.Tensor, rho: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
    unbiased: bool = True,
) -> torch.Tensor:
    """gamma * (rho * IN(x) + (1 - rho) * LN(x)) + beta; gamma, beta broadcast as (N|1, C, 1, 1).

    One statistics pass in float32 (so reduced precision keeps them exact),
    then one multiply-add on x centred on its instance mean. Both steps avoid
    cancellation when the mean dwarfs the spread: the layer variance is the
    mean instance variance plus the spread of the instance means (two-pass
    algebra, not E[x^2] - E[x]^2), and no term of size |mean| * scale is left
    to cancel in the multiply-add. Variances are unbiased, as in the authors'
    `torch.var` calls, so imported weights give the same outputs; their
    TensorFlow code (`tf.nn.moments`) takes biased ones: `unbiased=False`.
    """
    n_hw = x.shape[2] * x.shape[3]
    n_chw = n_hw * x.shape[1]
    in_var_b, in_mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    ln_mean = in_mean.mean(dim=1, keepdim=True)
    ln_var_b = (in_var_b + (in_mean - ln_mean).square()).mean(dim=1, keepdim=True)
    if unbiased:
        in_var_b, ln_var_b = in_var_b * (n_hw / (n_hw - 1)), ln_var_b * (n_chw / (n_chw - 1))
    in_inv = torch.rsqrt(in_var_b + eps)
    ln_inv = torch.rsqrt(ln_var_b + eps)
    rho, gamma = rho.float(), gamma.float()
    scale = rho * in_inv + (1 - rho) * ln_inv
    shift = (1 - rho) * (in_mean - ln_mean) * ln_inv  # LN's offset relative to the instance mean
    return torch.addcmul(shift * gamma + beta.float(), x - in_mean, scale * gamma).to(x.dtype)


class AdaILN(nn.Module):
    """Adaptive Layer-Instance Normalization: gamma and beta come from the CAM MLP."""

    def __init__(self, num_features: int, eps: float = 1e-5, unbiased: bool = True) -> None:
        super().__init__()
        self.eps, self.unbiased = eps, unbiased
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W); gamma, beta: (N, C)."""
        return _layer_instance_norm(x, self.rho, gamma[:, :, None, None], beta[:, :, None, None], self.eps,
                                    self.unbiased)


class ILN(nn.Module):
    """Layer-Instance Normalization with learned gamma and beta (the decoder's LIN)."""

    def __init__(self, num_features: int, eps: float = 1e-5, unbiased: bool = True) -> None:
        super().__init__()
        self.eps, self.unbiased = eps, unbiased
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.0))
        self.gamma = nn.Parameter(torch.full((1, num_features, 1, 1), 1.0))
        self.beta = nn.Parameter(torch.full((1, num_features, 1, 1), 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_instance_norm(x, self.rho, self.gamma, self.beta, self.eps, self.unbiased)


def clip_rho(module: nn.Module) -> None:
    """Keep every rho in [0, 1], as the paper requires after each generator step."""
    for m in module.modules():
        if isinstance(m, (AdaILN, ILN)):
            with torch.no_grad():
                m.rho.clamp_(0.0, 1.0)


def class_activation(
    x: torch.Tensor, gap_fc: nn.Linear, gmp_fc: nn.Linear, attention_fc: nn.Linear | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The auxiliary classifier eta and the attention map a = w * E.

    Logits of the average- and max-pooled features (N, 2), and the feature map
    re-weighted by each classifier's weights, concatenated along channels (N, 2C, H, W).
    With `attention_fc` (the authors' TensorFlow graph) both halves are re-weighted
    by its weight plus its bias instead.
    """
    n = x.shape[0]
    gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).view(n, -1))
    gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).view(n, -1))
    if attention_fc is not None:
        w = (attention_fc.weight + attention_fc.bias[:, None])[:, :, None, None]
        attention = torch.cat([x * w, x * w], 1)
    else:
        attention = torch.cat([x * gap_fc.weight[:, :, None, None], x * gmp_fc.weight[:, :, None, None]], 1)
    return torch.cat([gap_logit, gmp_logit], 1), attention


class Int8Linear(nn.Module):
    """A Linear whose weight is stored as int8 rows times one bf16 scale per output feature.

    The product is torch's weight-only int8 kernel on bf16 activations with float32
    accumulation (`_weight_int8pack_mm`): for the full model's 268M-parameter `FC.0` it
    reads 268 MB per picture instead of 1 GB, in 17-28 CPU ms against float32's 52 and a
    bf16 weight's 76 (AMD EPYC family 25 model 17, 2 threads; the same kernel on float32
    activations takes 240). The scales are bf16 because the kernel takes them so;
    `quantize` rounds the weights to exactly those scales.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        if in_features % 16:  # the kernel reads rows in blocks of 16: other lengths crash it or give NaN
            raise ValueError(f"an int8 layer needs in_features in multiples of 16, got {in_features}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.bfloat16))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @staticmethod
    def quantize(weight: torch.Tensor, rows: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 weight, bf16 scale per row) with weight ~= int8 * scale[:, None], symmetric per row.

        A few rows at a time, so a 1 GB float32 weight never needs a second float copy.
        """
        scale = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny).bfloat16()
        q = torch.empty(weight.shape, dtype=torch.int8)
        for i in range(0, len(weight), rows):
            block = weight[i : i + rows].float() / scale[i : i + rows, None].float()
            q[i : i + rows] = block.round_().clamp_(-127, 127)
        return q, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in_features) -> (N, out_features) in float32."""
        y = torch._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), self.weight, self.scale).float()
        return y if self.bias is None else y + self.bias


class ResnetBlock(nn.Module):
    """Encoder residual block: (pad, 3x3 conv, IN, ReLU) x 2 with a skip."""

    def __init__(self, dim: int, use_bias: bool = False, affine: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=use_bias),
            nn.InstanceNorm2d(dim, affine=affine),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=use_bias),
            nn.InstanceNorm2d(dim, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaILNBlock(nn.Module):
    """Decoder residual block whose normalisations take gamma/beta from the MLP."""

    def __init__(self, dim: int, use_bias: bool = False, unbiased: bool = True) -> None:
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=use_bias)
        self.norm1 = AdaILN(dim, unbiased=unbiased)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=0, bias=use_bias)
        self.norm2 = AdaILN(dim, unbiased=unbiased)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return out + x


class ResnetGenerator(nn.Module):
    """G_s->t: encoder, CAM attention, gamma/beta MLP, AdaILN decoder.

    `light` computes gamma/beta from the globally average-pooled attention
    map instead of the flattened one, which drops the (img_size/4)^2 * 4ch *
    4ch first MLP layer (268M of the full model's 279M parameters at 256 px).
    `tf_compat` builds the authors' TensorFlow graph (see the module docstring).
    `fc0_weight` is how that first MLP layer is stored: "float", or "int8" (`Int8Linear`).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 4,
        img_size: int = 256,
        light: bool = False,
        tf_compat: bool = False,
        fc0_weight: str = "float",
    ) -> None:
        super().__init__()
        if fc0_weight not in FC0_WEIGHTS:
            raise ValueError(f"fc0_weight must be one of {', '.join(FC0_WEIGHTS)}, got {fc0_weight!r}")
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if img_size % (2**N_DOWNSAMPLING):
            raise ValueError(f"img_size must be a multiple of {2**N_DOWNSAMPLING}, got {img_size}")
        self.input_nc, self.output_nc = input_nc, output_nc
        self.ngf, self.n_blocks, self.img_size, self.light = ngf, n_blocks, img_size, light
        self.tf_compat, self.fc0_weight = tf_compat, fc0_weight
        mult = 2**N_DOWNSAMPLING
        bottleneck = ngf * mult
        bias = tf_compat  # TensorFlow's convolutions and MLP layers all carry biases

        # Encoder (down-sampling and bottleneck)
        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, stride=1, padding=0, bias=bias),
            nn.InstanceNorm2d(ngf, affine=tf_compat),
            nn.ReLU(True),
        ]
        for i in range(N_DOWNSAMPLING):
            c = ngf * 2**i
            down += [
                # TensorFlow pads a 3x3 stride-2 convolution by 1 at the top/left and 0 at the bottom/right
                nn.ReflectionPad2d((1, 0, 1, 0) if tf_compat else 1),
                nn.Conv2d(c, c * 2, kernel_size=3, stride=2, padding=0, bias=bias),
                nn.InstanceNorm2d(c * 2, affine=tf_compat),
                nn.ReLU(True),
            ]
        down += [ResnetBlock(bottleneck, use_bias=bias, affine=tf_compat) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)

        # Class activation map (auxiliary classifier eta_s)
        self.gap_fc = nn.Linear(bottleneck, 1, bias=bias)
        self.gmp_fc = nn.Linear(bottleneck, 1, bias=bias)
        # TensorFlow: the attention re-weights by a variable of its own (plus its bias), not the logits' weights
        self.attention_fc = nn.Linear(bottleneck, 1, bias=True) if tf_compat else None
        self.conv1x1 = nn.Conv2d(bottleneck * 2, bottleneck, kernel_size=1, stride=1, bias=True)
        self.relu = nn.ReLU(True)

        # Gamma/beta MLP
        fc_in = bottleneck if light else (img_size // mult) ** 2 * bottleneck
        fc0 = Int8Linear if fc0_weight == "int8" else nn.Linear
        self.FC = nn.Sequential(
            fc0(fc_in, bottleneck, bias=bias),
            nn.ReLU(True),
            nn.Linear(bottleneck, bottleneck, bias=bias),
            nn.ReLU(True),
        )
        self.gamma = nn.Linear(bottleneck, bottleneck, bias=bias)
        self.beta = nn.Linear(bottleneck, bottleneck, bias=bias)

        # Decoder: AdaILN residual blocks (attribute names as in the authors' code)
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaILNBlock(bottleneck, use_bias=bias, unbiased=not tf_compat))

        # Decoder: up-sampling with ILN, then the output layer
        up: list[nn.Module] = []
        for i in range(N_DOWNSAMPLING):
            c = ngf * 2 ** (N_DOWNSAMPLING - i)
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(c, c // 2, kernel_size=3, stride=1, padding=0, bias=bias),
                ILN(c // 2, unbiased=not tf_compat),
                nn.ReLU(True),
            ]
        up += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, stride=1, padding=0, bias=bias),
            nn.Tanh(),
        ]
        self.UpBlock2 = nn.Sequential(*up)

    def arch(self) -> dict[str, int | bool]:
        """Constructor arguments, saved beside the weights so serving rebuilds this network."""
        arch: dict[str, int | bool] = {
            "input_nc": self.input_nc,
            "output_nc": self.output_nc,
            "ngf": self.ngf,
            "n_blocks": self.n_blocks,
            "img_size": self.img_size,
            "light": self.light,
        }
        if self.tf_compat:  # written only when set: archives of our own networks stay as they were
            arch["tf_compat"] = True
        if self.fc0_weight != "float":
            arch["fc0_weight"] = self.fc0_weight
        return arch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, S, S) in [-1, 1] -> (image (N, 3, S, S), cam_logit (N, 2), heatmap (N, 1, S/4, S/4))."""
        x = self.DownBlock(x)
        n = x.shape[0]
        cam_logit, x = class_activation(x, self.gap_fc, self.gmp_fc, self.attention_fc)
        x = self.relu(self.conv1x1(x))
        heatmap = torch.sum(x, dim=1, keepdim=True)

        mlp_in = F.adaptive_avg_pool2d(x, 1) if self.light else x
        h = self.FC(mlp_in.reshape(n, -1))
        gamma, beta = self.gamma(h), self.beta(h)

        for i in range(self.n_blocks):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
        return self.UpBlock2(x), cam_logit, heatmap


def min_image_size(n_layers: int) -> int:
    """Smallest input a `Discriminator(n_layers=...)` accepts.

    n_layers - 2 stride-2 convolutions halve the size, then two 4x4 stride-1
    convolutions each take one pixel off; the patch map must keep >= 1 px.
    """
    return 3 * 2 ** (n_layers - 2)


class Discriminator(nn.Module):
    """D_t: spectral-normalised PatchGAN with its own CAM classifier.

    The paper uses n_layers=7 for the global and 5 for the local discriminator
    (receptive fields that cover the whole 256 px image and a local patch).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"a discriminator needs n_layers >= 3, got {n_layers}")
        sn = nn.utils.spectral_norm
        model: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            sn(nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=0, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, n_layers - 2):
            c = ndf * 2 ** (i - 1)
            model += [
                nn.ReflectionPad2d(1),
                sn(nn.Conv2d(c, c * 2, kernel_size=4, stride=2, padding=0, bias=True)),
                nn.LeakyReLU(0.2, True),
            ]
        c = ndf * 2 ** (n_layers - 3)
        model += [
            nn.ReflectionPad2d(1),
            sn(nn.Conv2d(c, c * 2, kernel_size=4, stride=1, padding=0, bias=True)),
            nn.LeakyReLU(0.2, True),
        ]
        self.model = nn.Sequential(*model)
        self.n_layers = n_layers

        # Class activation map (auxiliary classifier eta_Dt)
        c = ndf * 2 ** (n_layers - 2)
        self.gap_fc = sn(nn.Linear(c, 1, bias=False))
        self.gmp_fc = sn(nn.Linear(c, 1, bias=False))
        self.conv1x1 = nn.Conv2d(c * 2, c, kernel_size=1, stride=1, bias=True)
        self.leaky_relu = nn.LeakyReLU(0.2, True)

        # Patch classifier
        self.pad = nn.ReflectionPad2d(1)
        self.conv = sn(nn.Conv2d(c, 1, kernel_size=4, stride=1, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, S, S) -> (patch logits (N, 1, s, s), cam_logit (N, 2), heatmap)."""
        if min(x.shape[-2:]) < min_image_size(self.n_layers):
            raise ValueError(
                f"a {self.n_layers}-layer discriminator needs images of at least "
                f"{min_image_size(self.n_layers)} px, got {tuple(x.shape[-2:])}"
            )
        # In the discriminator the spectrally normalised weights re-weight the map (the
        # authors used the raw `weight_orig`, which lets its scale drift).
        cam_logit, x = class_activation(self.model(x), self.gap_fc, self.gmp_fc)
        x = self.leaky_relu(self.conv1x1(x))
        heatmap = torch.sum(x, dim=1, keepdim=True)
        return self.conv(self.pad(x)), cam_logit, heatmap
