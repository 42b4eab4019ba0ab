"""Winograd F(4x4, 3x3) convolutions (lmt_fast.runtime.winograd) against F.conv2d.

float64 shows the algebra is exact (the transforms are exact up to float64 rounding); float32 shows the
rounding stays within its documented bound; the fused runtime uses them for the paper model's wide convs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmt_fast.models import LOMITConfig, LOMITGenerator
from lmt_fast.models.layers import ConvNormAct, Norm
from lmt_fast.runtime import fused, winograd
from lmt_fast.runtime.fused import FusedGenerator, UpsampleConv
from lmt_fast.runtime.winograd import (
    WinogradConvNormAct,
    use_winograd,
    winograd_applies,
    winograd_conv2d,
    winograd_weight,
)

NO_FUSED_CPU = fused.fused_unavailable_reason("cpu", torch.float32)
needs_fused_cpu = pytest.mark.skipif(NO_FUSED_CPU is not None, reason=f"no fused CPU op backend: {NO_FUSED_CPU}")


def randn(seed: int, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def conv_case(seed: int, n: int, c_in: int, c_out: int, h: int, w: int, dtype=torch.float64):
    x = randn(seed, n, c_in, h, w, dtype=dtype)
    weight = randn(seed + 1, c_out, c_in, 3, 3, dtype=dtype) / (3 * c_in ** 0.5)  # outputs of size ~1
    bias = randn(seed + 2, c_out, dtype=dtype)
    return x, weight, bias


# (N, C_in, C_out, H, W) of the padded input: whole tiles, partial tiles, a single 3x3 window, wide convs.
SHAPES = [(1, 4, 6, 6, 6), (2, 7, 5, 9, 13), (3, 16, 8, 3, 3), (1, 64, 128, 11, 6), (2, 32, 32, 18, 34)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_float64_is_the_direct_conv(shape, channels_last):
    x, weight, bias = conv_case(sum(shape), *shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = F.conv2d(x, weight, bias)
    got = winograd_conv2d(x, winograd_weight(weight), bias)
    assert got.shape == want.shape and got.dtype == torch.float64
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # no bias: the same conv without it
    torch.testing.assert_close(winograd_conv2d(x, winograd_weight(weight)), F.conv2d(x, weight), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 256, 256, 34, 34), (2, 64, 128, 19, 21)])
def test_float32_rounding_stays_within_its_bound(shape):
    """float32 Winograd vs the exact conv: within 2e-5 of the output's scale (direct float32: ~3e-7)."""
    x, weight, bias = conv_case(7, *shape)
    exact = F.conv2d(x, weight, bias)
    got = winograd_conv2d(x.float(), winograd_weight(weight.float()), bias.float())
    assert got.dtype == torch.float32
    err = (got.double() - exact).abs().max().item()
    direct_err = (F.conv2d(x.float(), weight.float(), bias.float()).double() - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert err < 2e-5 * scale, (err, scale)
    assert err < 50 * direct_err, (err, direct_err)


def test_output_is_written_everywhere():
    """Fresh random inputs, two calls with different data: nothing is left over from an earlier buffer."""
    x, weight, bias = conv_case(3, 2, 8, 8, 10, 14)
    u = winograd_weight(weight)
    first = winograd_conv2d(x, u, bias)
    second = winograd_conv2d(-x, u, bias)
    torch.testing.assert_close(second, F.conv2d(-x, weight, bias), rtol=0, atol=1e-12)
    assert torch.isfinite(first).all() and not torch.equal(first, second)


def test_bad_inputs_are_named():
    x, weight, bias = conv_case(1, 1, 4, 4, 8, 8)
    with pytest.raises(ValueError, match=r"\(C_out, C_in, 3, 3\)"):
        winograd_weight(torch.zeros(4, 4, 5, 5))
    with pytest.raises(ValueError, match="does not fit an input with 5 channels"):
        winograd_conv2d(torch.randn(1, 5, 8, 8, dtype=torch.float64), winograd_weight(weight))
    with pytest.raises(ValueError, match="float32/float64"):
        winograd_conv2d(x.bfloat16(), winograd_weight(weight).bfloat16())
    with pytest.raises(ValueError, match="H, W >= 3"):
        winograd_conv2d(x[:, :, :2], winograd_weight(weight))


def test_which_convs_apply():
    wide = torch.nn.Conv2d(64, 64, 3)
    assert winograd_applies(wide, torch.float32, 64)
    assert not winograd_applies(wide, torch.bfloat16, 64)                 # rounding too coarse
    assert not winograd_applies(torch.nn.Conv2d(32, 64, 3), torch.float32, 64)  # too narrow to pay
    assert not winograd_applies(torch.nn.Conv2d(64, 64, 3, stride=2), torch.float32, 1)
    assert not winograd_applies(torch.nn.Conv2d(64, 64, 5), torch.float32, 1)
    assert not winograd_applies(torch.nn.Conv2d(64, 64, 3, padding=1), torch.float32, 1)  # pads itself
    assert not winograd_applies(torch.nn.Conv2d(64, 64, 3, groups=2), torch.float32, 1)


def test_conv_norm_act_block_is_the_same_computation():
    torch.manual_seed(0)
    block = ConvNormAct(16, 16, 3, 1, 1, "in", "relu").double().eval()
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.normal_()
    block.norm.backend = "reference"
    fast = WinogradConvNormAct(block)
    x, residual = randn(5, 2, 16, 11, 9, dtype=torch.float64), randn(6, 2, 16, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(fast(x), block(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(fast(x, residual), block(x, residual), rtol=0, atol=1e-12)


def test_use_winograd_replaces_only_eligible_blocks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(ConvNormAct(8, 8, 3, 1, 1, "in", "relu"),    # eligible
                                ConvNormAct(8, 8, 5, 1, 2, "in", "relu"),    # 5x5
                                ConvNormAct(8, 8, 4, 2, 1, "in", "relu"),    # strided
                                ConvNormAct(8, 2, 3, 1, 1, "none", "none"))  # too narrow at min 4
    assert use_winograd(model, min_channels=4) == 1
    assert [type(m).__name__ for m in model] == ["WinogradConvNormAct", "ConvNormAct", "ConvNormAct", "ConvNormAct"]


def test_upsample_phase_conv_by_winograd_is_the_literal_form():
    torch.manual_seed(0)
    block = ConvNormAct(8, 6, 5, 1, 2, "none", "relu").double()
    layer = UpsampleConv(block)
    assert layer.use_winograd(min_channels=4)
    assert layer.phase_winograd is not None
    x = randn(9, 2, 8, 7, 10, dtype=torch.float64)
    want = block(F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    assert not UpsampleConv(ConvNormAct(8, 6, 7, 1, 3, "none", "relu").double()).use_winograd(min_channels=4)


# --------------------------------------------------------------------------------------------------
# In the fused runtime
# --------------------------------------------------------------------------------------------------

def paper_generator() -> LOMITGenerator:
    """The paper-size generator (its 256-channel convs are where Winograd applies), random norm affines."""
    torch.manual_seed(0)
    g = LOMITGenerator(LOMITConfig.paper())
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, Norm) and m.kind != "none":
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    g.eval()
    g.set_backend("reference")
    return g


@needs_fused_cpu
def test_fused_runtime_uses_winograd_on_cpu_float32_and_matches_eager():
    g = paper_generator()
    fast = FusedGenerator(g, device="cpu")
    assert fast.winograd is True and "winograd=True" in repr(fast)
    wide = [m for m in fast.module.modules() if isinstance(m, WinogradConvNormAct)]
    cfg = g.config
    # the content encoder's and decoder's residual blocks (2 convs each) and the mask network's convs
    assert len(wide) == 2 * cfg.n_res_blocks + cfg.mask_blocks
    assert all(layer.phase_winograd is not None for layer in fast.module.decoder.up)
    x = randn(40, 2, 3, 32, 32).clamp(-1, 1)
    e = randn(41, 2, 3, 32, 32).clamp(-1, 1)
    direct = FusedGenerator(g, device="cpu", winograd=False)
    assert not any(isinstance(m, WinogradConvNormAct) for m in direct.module.modules())
    with torch.no_grad():
        want = g(x, e)
        got, got_direct = fast(x, e), direct(x, e)
    # the image is tanh-bounded; float32 Winograd moves it by ~1e-5 (direct fused: ~5e-6)
    assert (got.image - want.image).abs().max().item() < 5e-5
    assert (got.input_mask - want.input_mask).abs().max().item() < 5e-5
    assert (got_direct.image - want.image).abs().max().item() < 5e-5


@needs_fused_cpu
def test_winograd_is_refused_in_low_precision():
    g = LOMITGenerator(LOMITConfig.tiny()).eval()
    assert FusedGenerator(g, device="cpu", dtype=torch.bfloat16).winograd is False
    with pytest.raises(ValueError, match="float32/float64 only"):
        FusedGenerator(g, device="cpu", dtype=torch.bfloat16, winograd=True)


@needs_fused_cpu
def test_min_channels_is_read_when_preparing(monkeypatch):
    """The tiny model's convs are narrower than MIN_CHANNELS; lowering it puts them on Winograd too."""
    g = LOMITGenerator(LOMITConfig.tiny()).eval()
    g.set_backend("reference")
    assert not any(isinstance(m, WinogradConvNormAct) for m in FusedGenerator(g, device="cpu").module.modules())
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    fast = FusedGenerator(g, device="cpu")
    assert any(isinstance(m, WinogradConvNormAct) for m in fast.module.modules())
    x, e = randn(50, 1, 3, 64, 64).clamp(-1, 1), randn(51, 1, 3, 64, 64).clamp(-1, 1)
    with torch.no_grad():
        assert (fast(x, e).image - g(x, e).image).abs().max().item() < 5e-5


# --------------------------------------------------------------------------------------------------
# The compiled tile transforms (csrc/cpu/winograd.cpp) against the torch-op transforms and F.conv2d
# --------------------------------------------------------------------------------------------------

needs_compiled = pytest.mark.skipif(
    not winograd._compiled_transforms(),
    reason="lmt_fast._C is not built, or lacks torch.ops.lmt.winograd_input_transform / _output_transform")


def tiling(h: int, w: int, pad: int = 0):
    """(out_h, out_w, tiles_h, tiles_w) of a valid 3x3 conv on an h x w input reflect-padded by pad."""
    out_h, out_w = h + 2 * pad - 2, w + 2 * pad - 2
    return out_h, out_w, -(-out_h // 4), -(-out_w // 4)


def reflect(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x, (pad,) * 4, mode="reflect") if pad else x


def _poison_heap(*shapes, dtype=torch.float64):
    """Allocate and free NaN blocks the size of the coming outputs, so that an element a kernel leaves
    unwritten would likely read NaN (best effort, as in tests/test_ops_cpu.py)."""
    blocks = [torch.full(shape, float("nan"), dtype=dtype) for shape in shapes for _ in range(2)]
    del blocks


# (N, C, H, W, pad): tiny 3x3 inputs, H, W not multiples of 4 (partial tiles), C not a multiple of the
# vector width or of the channel chunk (64 float32 / 32 float64 channels per step), batches up to 3.
TRANSFORM_CASES = [(1, 5, 3, 3, 0), (2, 7, 9, 13, 1), (3, 17, 10, 6, 0), (1, 37, 11, 14, 2), (2, 3, 4, 5, 1),
                   (1, 70, 7, 7, 1)]


@needs_compiled
@pytest.mark.parametrize("case", TRANSFORM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_compiled_input_transform_is_the_torch_transform(case):
    from lmt_fast.ops import library

    n, c, h, w, pad = case
    x = randn(sum(case), n, c, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    _, _, tiles_h, tiles_w = tiling(h, w, pad)
    want = winograd._torch_input_transform(reflect(x, pad), tiles_h, tiles_w)
    _poison_heap((36, n * tiles_h * tiles_w, c))
    got = torch.ops.lmt.winograd_input_transform(x, pad, tiles_h, tiles_w)
    assert got.shape == want.shape and got.dtype == torch.float64
    assert got.stride() == library.winograd_planes(n * tiles_h * tiles_w, c, x.dtype, x.device).stride()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # strided views are read in place: a crop of a larger channels_last tensor (N, H, W strides not dense)
    big = randn(sum(case) + 1, n, c, h + 3, w + 2, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    view = big[:, :, 2:2 + h, 1:1 + w]
    assert view.stride(1) == 1 and not view.is_contiguous(memory_format=torch.channels_last)
    want = winograd._torch_input_transform(reflect(view, pad), tiles_h, tiles_w)
    torch.testing.assert_close(torch.ops.lmt.winograd_input_transform(view, pad, tiles_h, tiles_w), want,
                               rtol=0, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("case", TRANSFORM_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("with_bias", [True, False])
def test_compiled_output_transform_is_the_torch_transform(case, with_bias):
    from lmt_fast.ops import library

    n, k, h, w, pad = case
    out_h, out_w, tiles_h, tiles_w = tiling(h, w, pad)
    tiles = n * tiles_h * tiles_w
    bias = randn(sum(case) + 2, k, dtype=torch.float64) if with_bias else None
    dense = randn(sum(case) + 3, 36, tiles, k, dtype=torch.float64)
    padded = library.winograd_planes(tiles, k, dense.dtype, dense.device).copy_(dense)  # what the runtime passes
    want = winograd._torch_output_transform(dense, bias, n, out_h, out_w, tiles_h, tiles_w)
    for m in (dense, padded):
        _poison_heap((n, k, out_h, out_w))
        got = torch.ops.lmt.winograd_output_transform(m, bias, n, out_h, out_w, tiles_h, tiles_w)
        assert got.shape == (n, k, out_h, out_w) and got.is_contiguous(memory_format=torch.channels_last)
        assert not got.isnan().any()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@needs_compiled
@pytest.mark.parametrize("case", TRANSFORM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_compiled_conv_is_the_direct_conv_and_the_torch_path(case, monkeypatch):
    n, c, h, w, pad = case
    x, weight, bias = conv_case(sum(case) + 4, n, c, 6, h, w)
    u = winograd_weight(weight)
    for b in (bias, None):
        want = F.conv2d(reflect(x, pad), weight, b)
        got = winograd_conv2d(x, u, b, pad=pad)                 # NCHW input: copied to channels_last once
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        with monkeypatch.context() as patch:
            patch.setattr(winograd, "_compiled_transforms", lambda: False)
            torch.testing.assert_close(winograd_conv2d(x, u, b, pad=pad), got, rtol=0, atol=1e-12)


@needs_compiled
def test_compiled_float32_conv_stays_within_the_float32_bound():
    """The same bound as test_float32_rounding_stays_within_its_bound, with the reflect pad fused."""
    x, weight, bias = conv_case(11, 2, 64, 96, 17, 19)
    exact = F.conv2d(reflect(x, 1), weight, bias)
    got = winograd_conv2d(x.float().contiguous(memory_format=torch.channels_last), winograd_weight(weight.float()),
                          bias.float(), pad=1)
    assert got.dtype == torch.float32
    err = (got.double() - exact).abs().max().item()
    direct_err = (F.conv2d(reflect(x, 1).float(), weight.float(), bias.float()).double() - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert err < 2e-5 * scale, (err, scale)
    assert err < 50 * direct_err, (err, direct_err)


@needs_compiled
def test_compiled_transforms_write_every_output_element():
    """Two calls on different data into poisoned memory: each result is the reference everywhere."""
    n, c, h, w = 2, 9, 10, 7
    out_h, out_w, tiles_h, tiles_w = tiling(h, w, 1)
    for seed in (1, 2):
        x = randn(seed, n, c, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        _poison_heap((36, n * tiles_h * tiles_w, c), (n, c, out_h, out_w))
        v = torch.ops.lmt.winograd_input_transform(x, 1, tiles_h, tiles_w)
        torch.testing.assert_close(v, winograd._torch_input_transform(reflect(x, 1), tiles_h, tiles_w),
                                   rtol=0, atol=1e-12)
        y = torch.ops.lmt.winograd_output_transform(v, None, n, out_h, out_w, tiles_h, tiles_w)
        assert not y.isnan().any()
        # y is ~1e3 here (two transforms, no weights): float64 rounding is relative
        torch.testing.assert_close(y, winograd._torch_output_transform(v, None, n, out_h, out_w, tiles_h, tiles_w),
                                   rtol=1e-14, atol=1e-12)


@needs_compiled
def test_compiled_transforms_name_bad_inputs():
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    ops = torch.ops.lmt
    with pytest.raises(RuntimeError, match="channels_last"):
        ops.winograd_input_transform(x.contiguous(), 0, 2, 2)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.winograd_input_transform(x.bfloat16(), 0, 2, 2)
    with pytest.raises(RuntimeError, match="4-D"):
        ops.winograd_input_transform(x[0], 0, 2, 2)
    with pytest.raises(RuntimeError, match="reflect padding needs 0 <= pad < H"):
        ops.winograd_input_transform(x, 8, 2, 2)
    with pytest.raises(RuntimeError, match="tiles_h and tiles_w must be >= 1"):
        ops.winograd_input_transform(x, 0, 0, 2)
    m = torch.randn(36, 4, 5)
    with pytest.raises(RuntimeError, match=r"m must have shape \(36, n \* tiles_h \* tiles_w, K\)"):
        ops.winograd_output_transform(m, None, 2, 8, 8, 2, 2)
    with pytest.raises(RuntimeError, match="cannot cover an output of 9 x 8"):
        ops.winograd_output_transform(m, None, 1, 9, 8, 2, 2)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(5\)"):
        ops.winograd_output_transform(m, torch.zeros(4), 1, 8, 8, 2, 2)
    with pytest.raises(RuntimeError, match="bias must have m's dtype"):
        ops.winograd_output_transform(m, torch.zeros(5, dtype=torch.float64), 1, 8, 8, 2, 2)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        ops.winograd_output_transform(m.half(), None, 1, 8, 8, 2, 2)
    with pytest.raises(ValueError, match="reflect padding by 8 needs 0 <= pad < H, W"):
        winograd_conv2d(x, winograd_weight(torch.randn(4, 4, 3, 3)), pad=8)


@needs_compiled
@pytest.mark.parametrize("op", ["input", "output"])
def test_compiled_transforms_pass_opcheck(op):
    g = torch.Generator().manual_seed(3)
    if op == "input":
        x = torch.randn(2, 5, 7, 9, generator=g).contiguous(memory_format=torch.channels_last)
        samples = [(x, 1, 2, 3), (x, 0, 2, 2)]
    else:
        m = torch.randn(36, 12, 5, generator=g)
        samples = [(m, torch.randn(5, generator=g), 2, 7, 9, 2, 3), (m, None, 1, 10, 12, 3, 4)]
    for args in samples:
        result = torch.library.opcheck(getattr(torch.ops.lmt, f"winograd_{op}_transform"), args)
        assert all(v == "SUCCESS" for v in result.values()), result


@needs_compiled
def test_compiled_conv_traces_under_fake_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(2, 8, 9, 13).contiguous(memory_format=torch.channels_last)
        y = winograd_conv2d(x, torch.empty(36, 8, 6), torch.empty(6), pad=1)
    assert y.shape == (2, 6, 9, 13) and y.is_contiguous(memory_format=torch.channels_last)
