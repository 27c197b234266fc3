"""The U-GAT-IT networks: shapes, the authors' parameter counts, AdaILN/ILN and rho."""

from __future__ import annotations

import pytest
import torch

from styles.payload.networks import AdaILN, ILN, Discriminator, Int8Linear, ResnetGenerator, clip_rho, min_image_size


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("light", "expected"), [(False, 278_959_808), (True, 10_589_888)])
def test_parameter_counts_match_the_authors_release(light: bool, expected: int) -> None:
    with torch.device("meta"):  # no memory: the full model holds 279M parameters
        g = ResnetGenerator(ngf=64, n_blocks=4, img_size=256, light=light)
    assert n_params(g) == expected


@pytest.mark.parametrize("light", [False, True])
@pytest.mark.parametrize("size", [32, 48, 64])
def test_generator_shapes(light: bool, size: int) -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2, img_size=size, light=light)
    x = torch.rand(2, 3, size, size) * 2 - 1
    out, cam_logit, heatmap = g(x)
    assert out.shape == x.shape
    assert cam_logit.shape == (2, 2)
    assert heatmap.shape == (2, 1, size // 4, size // 4)
    assert out.abs().max() <= 1.0  # tanh


def test_full_generator_needs_its_training_size() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=1, img_size=32, light=False)
    with pytest.raises(RuntimeError):
        g(torch.zeros(1, 3, 64, 64))
    light = ResnetGenerator(ngf=8, n_blocks=1, img_size=32, light=True)
    assert light(torch.zeros(1, 3, 64, 64))[0].shape == (1, 3, 64, 64)  # any size


def test_int8_weights_lie_within_half_a_step_of_the_float_ones() -> None:
    w = torch.randn(8, 1024) * torch.logspace(-6, 1, 8)[:, None]  # rows of very different sizes
    w[3] = 0  # a row of zeros quantizes to zeros, not NaN
    q, scale = Int8Linear.quantize(w, rows=3)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and q.abs().max() <= 127
    error = (q.float() * scale.float()[:, None] - w).abs()
    assert (error <= scale.float()[:, None] * 0.51).all()  # the scale applied is the one stored


def test_the_int8_layer_computes_the_dequantized_product() -> None:
    fc = Int8Linear(1024, 8)
    fc.weight, fc.scale = Int8Linear.quantize(torch.randn(8, 1024))
    fc.bias.data = torch.randn(8)
    x = torch.rand(2, 1024)
    # the kernel multiplies the activations rounded to bf16, sums exactly enough, and rounds the product to bf16
    exact = torch.nn.functional.linear(x.bfloat16().double(), fc.weight.double() * fc.scale.double()[:, None])
    assert torch.allclose(fc(x).double() - fc.bias.double(), exact, rtol=2**-8, atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 16"):  # the kernel's row blocks
        Int8Linear(1000, 8)


def test_a_generator_stores_its_first_mlp_layer_as_asked() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=1, img_size=32, tf_compat=True, fc0_weight="int8")
    assert isinstance(g.FC[0], Int8Linear) and g.FC[0].weight.dtype == torch.int8
    assert g.arch()["fc0_weight"] == "int8" and "fc0_weight" not in ResnetGenerator(ngf=8, img_size=32).arch()
    assert ResnetGenerator(**g.arch()).arch() == g.arch()
    with pytest.raises(ValueError, match="fc0_weight"):
        ResnetGenerator(ngf=8, img_size=32, fc0_weight="int4")


@pytest.mark.parametrize(("n_layers", "size", "patch"), [(5, 32, 2), (5, 64, 6), (7, 256, 6), (4, 32, 6)])
def test_discriminator_shapes(n_layers: int, size: int, patch: int) -> None:
    d = Discriminator(ndf=8, n_layers=n_layers)
    logit, cam_logit, heatmap = d(torch.zeros(3, 3, size, size))
    assert logit.shape == (3, 1, patch, patch)
    assert cam_logit.shape == (3, 2)
    assert heatmap.shape[:2] == (3, 1)


def test_discriminator_rejects_too_small_images_clearly() -> None:
    d = Discriminator(ndf=8, n_layers=7)
    assert min_image_size(7) == 96
    with pytest.raises(ValueError, match="at least 96 px"):
        d(torch.zeros(1, 3, 64, 64))


def reference_lin(x: torch.Tensor, rho: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The authors' two-pass formulation, to check the fused one against."""
    in_mean, in_var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), keepdim=True)
    ln_mean, ln_var = x.mean(dim=(1, 2, 3), keepdim=True), x.var(dim=(1, 2, 3), keepdim=True)
    out_in = (x - in_mean) / torch.sqrt(in_var + eps)
    out_ln = (x - ln_mean) / torch.sqrt(ln_var + eps)
    return rho * out_in + (1 - rho) * out_ln


def test_adailn_matches_the_authors_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8) * 3 + 1
    norm = AdaILN(16)
    norm.rho.data.uniform_(0, 1)
    gamma, beta = torch.randn(2, 16), torch.randn(2, 16)
    expected = reference_lin(x, norm.rho) * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(norm(x, gamma, beta), expected, rtol=1e-4, atol=1e-4)


def test_iln_matches_the_authors_formula() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 16, 16)
    norm = ILN(8)
    norm.rho.data.fill_(0.3)
    norm.gamma.data.normal_()
    norm.beta.data.normal_()
    expected = reference_lin(x, norm.rho) * norm.gamma + norm.beta
    torch.testing.assert_close(norm(x), expected, rtol=1e-4, atol=1e-4)


def test_lin_stays_exact_when_the_mean_dwarfs_the_spread() -> None:
    """Mean 100, std 0.1, against the authors' formula in float64.

    E[x^2] - E[x]^2 would fail this: both terms are near 1e4, where float32
    numbers lie ~1e-3 apart, while the true variance is 1e-2, so the layer
    variance keeps about one significant digit and outputs drift by ~0.1-0.45.
    The two-pass algebra (instance variances plus the spread of instance means)
    and centring x before the multiply-add leave only float32 rounding of the
    mean (~4e-6, i.e. ~4e-5 after dividing by std 0.1).
    """
    torch.manual_seed(0)
    x = torch.randn(2, 256, 24, 24) * 0.1 + 100
    ada, iln = AdaILN(256), ILN(256)
    for norm in (ada, iln):
        norm.rho.data.uniform_(0, 1)
    iln.gamma.data.uniform_(0.5, 1.5)
    iln.beta.data.normal_()
    gamma, beta = torch.rand(2, 256) + 0.5, torch.randn(2, 256)
    x64, g64, b64 = x.double(), gamma.double()[:, :, None, None], beta.double()[:, :, None, None]
    expected_ada = reference_lin(x64, ada.rho.double()) * g64 + b64
    expected_iln = reference_lin(x64, iln.rho.double()) * iln.gamma.double() + iln.beta.double()
    with torch.no_grad():
        assert (ada(x, gamma, beta).double() - expected_ada).abs().max() < 2e-4
        assert (iln(x).double() - expected_iln).abs().max() < 2e-4


def test_rho_starts_as_in_the_paper_and_is_clipped_to_unit_interval() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2, img_size=32, light=True)
    ada = [m for m in g.modules() if isinstance(m, AdaILN)]
    iln = [m for m in g.modules() if isinstance(m, ILN)]
    assert len(ada) == 4 and len(iln) == 2
    assert all(torch.all(m.rho == 0.9) for m in ada)
    assert all(torch.all(m.rho == 0.0) for m in iln)
    ada[0].rho.data.fill_(1.7)
    iln[0].rho.data.fill_(-0.4)
    clip_rho(g)
    assert torch.all(ada[0].rho == 1.0)
    assert torch.all(iln[0].rho == 0.0)
    assert torch.all(ada[1].rho == 0.9)


def test_state_dict_keys_follow_the_authors_names() -> None:
    g = ResnetGenerator(ngf=8, n_blocks=2, img_size=32, light=True)
    keys = set(g.state_dict())
    for key in ("DownBlock.1.weight", "gap_fc.weight", "gmp_fc.weight", "conv1x1.bias", "FC.0.weight",
                "FC.2.weight", "gamma.weight", "beta.weight", "UpBlock1_2.norm2.rho",
                "UpBlock2.3.rho", "UpBlock2.11.weight"):
        assert key in keys, key
    d = Discriminator(ndf=8, n_layers=5)
    assert {"model.1.weight_orig", "model.1.weight_u", "gap_fc.weight_orig", "conv.weight_orig"} <= set(d.state_dict())


def test_invalid_configurations_raise() -> None:
    with pytest.raises(ValueError):
        ResnetGenerator(img_size=30)
    with pytest.raises(ValueError):
        Discriminator(n_layers=2)
