"""The op spec (lmt_fast.ops.reference, reached through lmt_fast.ops) against independent float64 references.

The numpy references below loop over regions and channels and reduce over the pixel set directly; they
share no code with the package. Inputs have a non-zero mean (-2.3 + 0.5 * randn) so that a variance
computed as E[x^2] - E[x]^2 would show up as cancellation error.
"""

import types
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmt_fast import ops
from lmt_fast.ops import dispatch

# (N, C, H, W, K): odd sizes, a 1x1 map, one to three regions.
SHAPES = [(1, 3, 7, 5, 1), (3, 4, 13, 17, 2), (1, 2, 1, 1, 3), (3, 5, 8, 9, 3)]
# float32 checks skip the 1x1 map: a one-pixel region has var = 0 and the result is then dominated
# by (x - mean) / sqrt(eps), which float32 cannot resolve to 1e-5.
SHAPES_F32 = [s for s in SHAPES if s[2] * s[3] > 1]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: different for every parametrization, reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------------------------------
# Input factories
# --------------------------------------------------------------------------------------------------


def make_x(gen, n, c, h, w, dtype=torch.float64):
    return (-2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).to(dtype)


def make_masks(gen, n, k, h, w, kind):
    u = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
    return (u > 0.5).double() if kind == "hard" else u


def make_style(gen, n, k, c):
    gamma = 0.5 + torch.rand(n, k, c, generator=gen, dtype=torch.float64)
    beta = torch.randn(n, k, c, generator=gen, dtype=torch.float64)
    return gamma, beta


def to_np(t):
    return t.detach().double().cpu().numpy()


def assert_matches(actual, expected, rtol, atol):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------------
# Independent float64 references
# --------------------------------------------------------------------------------------------------


def np_moments(x, m, eps):
    """Weighted mean / centred biased variance per (n, k, c); masks already at x's size."""
    n_, c_ = x.shape[:2]
    k_ = m.shape[1]
    mean = np.zeros((n_, k_, c_))
    var = np.zeros((n_, k_, c_))
    for n in range(n_):
        for k in range(k_):
            w = m[n, k].ravel()
            total = w.sum()
            for c in range(c_):
                v = x[n, c].ravel()
                mu = np.dot(w, v) / (total + eps)
                mean[n, k, c] = mu
                var[n, k, c] = np.dot(w, (v - mu) ** 2) / (total + eps)
    return mean, var


def np_activation(y, activation):
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "lrelu":
        return np.where(y >= 0, y, 0.01 * y)
    return y


def np_region_adain(x, m, gamma, beta, stats, eps, activation=None, residual=None):
    n_, c_ = x.shape[:2]
    k_ = m.shape[1]
    if stats == "global":
        flat = x.reshape(n_, c_, -1)
        mean = np.repeat(flat.mean(-1)[:, None], k_, axis=1)
        var = np.repeat(flat.var(-1)[:, None], k_, axis=1)
    else:
        mean, var = np_moments(x, m, eps)
    y = np.zeros_like(x)
    for n in range(n_):
        for k in range(k_):
            for c in range(c_):
                x_hat = (x[n, c] - mean[n, k, c]) / np.sqrt(var[n, k, c] + eps)
                y[n, c] += m[n, k] * (gamma[n, k, c] * x_hat + beta[n, k, c])
    y = np_activation(y, activation)
    return y if residual is None else y + residual


# --------------------------------------------------------------------------------------------------
# masked_moments
# --------------------------------------------------------------------------------------------------


def _moments_case(gen, shape, kind, dtype):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype)
    masks = make_masks(gen, n, k, h, w, kind)
    mean, var = ops.masked_moments(x, masks, eps=1e-5)
    exp_mean, exp_var = np_moments(to_np(x), to_np(masks), 1e-5)
    assert mean.shape == var.shape == (n, k, c)
    assert mean.dtype == var.dtype == dtype
    assert_matches(mean, exp_mean, **TOL[dtype])
    assert_matches(var, exp_var, **TOL[dtype])


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("shape", SHAPES)
def test_masked_moments_float64(gen, shape, kind):
    _moments_case(gen, shape, kind, torch.float64)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("shape", SHAPES)
def test_masked_moments_float32(gen, shape, kind):
    _moments_case(gen, shape, kind, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mask_size", [(5, 7), (26, 9), (1, 1)])
def test_masks_are_resized_bilinearly(gen, mask_size, dtype):
    x = make_x(gen, 2, 3, 13, 17, dtype)
    masks = make_masks(gen, 2, 2, *mask_size, "soft")
    gamma, beta = make_style(gen, 2, 2, 3)
    resized = F.interpolate(masks, size=(13, 17), mode="bilinear", align_corners=False)

    mean, var = ops.masked_moments(x, masks)
    exp_mean, exp_var = np_moments(to_np(x), to_np(resized), 1e-5)
    assert_matches(mean, exp_mean, **TOL[dtype])
    assert_matches(var, exp_var, **TOL[dtype])

    y = ops.region_adain(x, masks, gamma, beta, stats="region")
    expected = np_region_adain(to_np(x), to_np(resized), to_np(gamma), to_np(beta), "region", 1e-5)
    assert_matches(y, expected, **TOL[dtype])


@pytest.mark.parametrize("shape", [(2, 3, 7, 5, 2), (1, 4, 13, 17, 3)])
def test_hard_mask_moments_equal_cropped_pixel_statistics(gen, shape):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w)
    masks = make_masks(gen, n, k, h, w, "hard")
    masks[:, :, 0, 0] = 1.0  # no region is empty here
    mean, var = ops.masked_moments(x, masks, eps=1e-12)
    for i in range(n):
        for j in range(k):
            inside = to_np(masks[i, j]).astype(bool)
            for ch in range(c):
                pixels = to_np(x[i, ch])[inside]
                assert mean[i, j, ch].item() == pytest.approx(pixels.mean(), rel=1e-9, abs=1e-9)
                assert var[i, j, ch].item() == pytest.approx(pixels.var(), rel=1e-9, abs=1e-9)


def test_masks_of_other_dtypes_are_cast(gen):
    x = make_x(gen, 2, 3, 7, 5)
    hard = make_masks(gen, 2, 2, 7, 5, "hard")
    expected = ops.masked_moments(x, hard)
    for masks in (hard.bool(), hard.half(), hard.bfloat16()):
        for got, want in zip(ops.masked_moments(x, masks), expected):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# region_adain
# --------------------------------------------------------------------------------------------------

EPILOGUES = [(None, False), ("relu", True), ("lrelu", True), ("lrelu", False)]


def _region_case(gen, shape, stats, activation, with_residual, dtype, kind="soft"):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype)
    masks = make_masks(gen, n, k, h, w, kind)
    gamma, beta = make_style(gen, n, k, c)
    residual = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype) if with_residual else None
    y = ops.region_adain(x, masks, gamma, beta, stats=stats, activation=activation, residual=residual)
    expected = np_region_adain(
        to_np(x), to_np(masks), to_np(gamma), to_np(beta), stats, 1e-5, activation,
        None if residual is None else to_np(residual),
    )
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous()
    assert_matches(y, expected, **TOL[dtype])


@pytest.mark.parametrize("activation,with_residual", EPILOGUES)
@pytest.mark.parametrize("stats", ["global", "region"])
@pytest.mark.parametrize("shape", SHAPES)
def test_region_adain_float64(gen, shape, stats, activation, with_residual):
    _region_case(gen, shape, stats, activation, with_residual, torch.float64)


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("stats", ["global", "region"])
@pytest.mark.parametrize("shape", SHAPES_F32)
def test_region_adain_float32(gen, shape, stats, kind):
    _region_case(gen, shape, stats, "lrelu", True, torch.float32, kind)


@pytest.mark.parametrize("stats", ["global", "region"])
def test_all_ones_mask_region_stats_is_plain_adain(gen, stats):
    x = make_x(gen, 2, 3, 9, 7)
    ones = torch.ones(2, 1, 9, 7, dtype=torch.float64)
    gamma, beta = make_style(gen, 2, 1, 3)
    flat = to_np(x).reshape(2, 3, -1)
    mu, var = flat.mean(-1), flat.var(-1)

    def plain_adain(eps):
        x_hat = (to_np(x) - mu[..., None, None]) / np.sqrt(var[..., None, None] + eps)
        return to_np(gamma)[:, 0, :, None, None] * x_hat + to_np(beta)[:, 0, :, None, None]

    # Region statistics divide by H*W + eps instead of H*W: equal up to O(eps / (H*W)).
    y = ops.region_adain(x, ones, gamma, beta, stats=stats, eps=1e-5)
    assert_matches(y, plain_adain(1e-5), rtol=0, atol=1e-4 if stats == "region" else 1e-10)
    y_tiny_eps = ops.region_adain(x, ones, gamma, beta, stats=stats, eps=1e-12)
    assert_matches(y_tiny_eps, plain_adain(1e-12), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("stats", ["global", "region"])
def test_region_order_does_not_matter(gen, stats):
    x = make_x(gen, 2, 4, 11, 6)
    masks = make_masks(gen, 2, 3, 11, 6, "soft")
    gamma, beta = make_style(gen, 2, 3, 4)
    perm = torch.tensor([2, 0, 1])
    y = ops.region_adain(x, masks, gamma, beta, stats=stats, activation="relu")
    y_perm = ops.region_adain(x, masks[:, perm], gamma[:, perm], beta[:, perm], stats=stats, activation="relu")
    torch.testing.assert_close(y_perm, y, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# highway_adain
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_size", [(9, 7), (4, 3)])
def test_highway_equals_region_adain_with_complementary_masks(gen, mask_size):
    x = make_x(gen, 3, 4, 9, 7)
    mask = make_masks(gen, 3, 1, *mask_size, "soft")
    g_f, b_f, g_b, b_b = (0.5 + torch.rand(3, 4, generator=gen, dtype=torch.float64) for _ in range(4))
    y = ops.highway_adain(x, mask, g_f, b_f, g_b, b_b)
    stacked = ops.region_adain(
        x, torch.cat([mask, 1 - mask], 1), torch.stack([g_f, g_b], 1), torch.stack([b_f, b_b], 1),
        stats="global",
    )
    torch.testing.assert_close(y, stacked, rtol=1e-12, atol=1e-12)
    resized = F.interpolate(mask, size=(9, 7), mode="bilinear", align_corners=False)
    expected = np_region_adain(
        to_np(x), np.concatenate([to_np(resized), 1 - to_np(resized)], 1),
        np.stack([to_np(g_f), to_np(g_b)], 1), np.stack([to_np(b_f), to_np(b_b)], 1), "global", 1e-5,
    )
    assert_matches(y, expected, rtol=1e-10, atol=1e-10)


def test_pure_highway_returns_input(gen):
    x = make_x(gen, 2, 3, 8, 5)
    background_only = torch.zeros(2, 1, 8, 5, dtype=torch.float64)
    g_f, b_f = make_style(gen, 2, 1, 3)
    flat = to_np(x).reshape(2, 3, -1)
    mu = torch.from_numpy(flat.mean(-1))
    var = torch.from_numpy(flat.var(-1))
    exact = ops.highway_adain(x, background_only, g_f[:, 0], b_f[:, 0], torch.sqrt(var + 1e-5), mu)
    torch.testing.assert_close(exact, x, rtol=1e-12, atol=1e-12)
    # gamma_b = sigma(x) (no eps) passes x through up to O(eps / var).
    approx = ops.highway_adain(x, background_only, g_f[:, 0], b_f[:, 0], torch.sqrt(var), mu)
    torch.testing.assert_close(approx, x, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# instance_norm and layer_norm
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 3, 7, 5), (3, 6, 13, 17), (2, 4, 1, 2)])
def test_norms_match_torch(gen, shape, dtype, affine):
    x = make_x(gen, *shape, dtype=dtype)
    c = shape[1]
    weight = (0.5 + torch.rand(c, generator=gen, dtype=torch.float64)).to(dtype) if affine else None
    bias = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype) if affine else None
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else TOL[torch.float32]
    torch.testing.assert_close(
        ops.instance_norm(x, weight, bias, eps=1e-5), F.instance_norm(x, weight=weight, bias=bias, eps=1e-5), **tol
    )
    torch.testing.assert_close(ops.layer_norm(x, weight, bias, eps=1e-5), F.group_norm(x, 1, weight, bias, 1e-5), **tol)


def test_instance_norm_of_a_single_pixel_is_the_bias(gen):
    # F.instance_norm refuses 1x1 maps; the spec defines them: x - mean = 0, so y = bias.
    x = make_x(gen, 2, 4, 1, 1)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    y = ops.instance_norm(x, torch.full((4,), 3.0, dtype=torch.float64), bias)
    torch.testing.assert_close(y, bias.expand(2, 4).reshape(2, 4, 1, 1), rtol=0, atol=0)


@pytest.mark.parametrize("activation", ["relu", "lrelu"])
def test_norm_epilogue_is_activation_then_residual(gen, activation):
    x = make_x(gen, 2, 3, 7, 5)
    weight, bias = torch.rand(3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    residual = torch.randn(2, 3, 7, 5, generator=gen, dtype=torch.float64)
    act = {"relu": F.relu, "lrelu": lambda t: F.leaky_relu(t, 0.01)}[activation]
    for op, plain in ((ops.instance_norm, F.instance_norm(x, weight=weight, bias=bias)),
                      (ops.layer_norm, F.group_norm(x, 1, weight, bias))):
        y = op(x, weight, bias, activation=activation, residual=residual)
        torch.testing.assert_close(y, act(plain) + residual, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Layouts and low-precision inputs
# --------------------------------------------------------------------------------------------------


def _all_ops(x, gen):
    """Run every normalising op on x with fixed random side inputs; returns name -> output."""
    n, c, h, w = x.shape
    masks = make_masks(gen, n, 2, h, w, "soft")
    gamma, beta = make_style(gen, n, 2, c)
    residual = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(x.dtype)
    weight = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64)
    bias = torch.randn(c, generator=gen, dtype=torch.float64)
    return {
        "region_global": ops.region_adain(x, masks, gamma, beta, "global", activation="lrelu", residual=residual),
        "region_region": ops.region_adain(x, masks, gamma, beta, "region", activation="relu", residual=residual),
        "highway": ops.highway_adain(x, masks[:, :1], gamma[:, 0], beta[:, 0], gamma[:, 1], beta[:, 1]),
        "instance_norm": ops.instance_norm(x, weight, bias, activation="lrelu", residual=residual),
        "layer_norm": ops.layer_norm(x, weight, bias, residual=residual),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
def test_channels_last_in_channels_last_out(gen, dtype):
    x = make_x(gen, 2, 3, 7, 5, dtype)
    x_cl = x.to(memory_format=torch.channels_last)
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    nchw = _all_ops(x, torch.Generator().manual_seed(seed))
    channels_last = _all_ops(x_cl, torch.Generator().manual_seed(seed))
    # The layout changes the float32 summation order, so results agree to rounding, not bitwise.
    stats_tol = 1e-12 if dtype == torch.float64 else 1e-6
    out_tol = max(stats_tol, torch.finfo(dtype).eps)
    for name, y in channels_last.items():
        assert y.dtype == dtype, name
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous(), name
        assert nchw[name].is_contiguous(), name
        torch.testing.assert_close(y, nchw[name], rtol=out_tol, atol=out_tol, msg=name)
    masks = make_masks(gen, 2, 3, 4, 4, "soft")
    for got, want in zip(ops.masked_moments(x_cl, masks), ops.masked_moments(x, masks)):
        torch.testing.assert_close(got, want, rtol=stats_tol, atol=stats_tol)


@pytest.mark.parametrize("stats", ["global", "region"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_accumulate_in_float32(gen, dtype, layout, stats):
    n, c, h, w, k = 3, 4, 13, 17, 2
    x = make_x(gen, n, c, h, w, dtype).to(memory_format=layout)  # exactly representable inputs
    masks = make_masks(gen, n, k, h, w, "soft").to(dtype)
    gamma, beta = make_style(gen, n, k, c)
    residual = torch.randn(n, c, h, w, generator=gen).to(dtype)

    mean, var = ops.masked_moments(x, masks)
    assert mean.dtype == var.dtype == torch.float32
    exp_mean, exp_var = np_moments(to_np(x), to_np(masks), 1e-5)
    assert_matches(mean, exp_mean, rtol=1e-5, atol=1e-5)
    assert_matches(var, exp_var, rtol=1e-5, atol=1e-5)

    y = ops.region_adain(x, masks, gamma, beta, stats=stats, activation="lrelu", residual=residual)
    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=layout)
    expected = np_region_adain(
        to_np(x), to_np(masks), to_np(gamma), to_np(beta), stats, 1e-5, "lrelu", to_np(residual)
    )
    # float32 arithmetic, then one rounding to dtype: at most half an ulp of the result.
    assert_matches(y, expected, rtol=torch.finfo(dtype).eps, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Empty regions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_size", [(9, 7), (3, 5)])
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_empty_region_is_defined(gen, kind, mask_size):
    x = make_x(gen, 2, 3, 9, 7)
    masks = make_masks(gen, 2, 3, *mask_size, kind)
    masks[:, :, 0, 0] = 1.0
    masks[1, 1] = 0.0  # region 1 of sample 1 is empty
    gamma, beta = make_style(gen, 2, 3, 3)

    mean, var = ops.masked_moments(x, masks)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert (mean[1, 1] == 0).all() and (var[1, 1] == 0).all()
    assert (var[0] > 0).all() and (var[1, [0, 2]] > 0).all()

    for stats in ("global", "region"):
        y = ops.region_adain(x[1:], masks[1:], gamma[1:], beta[1:], stats=stats)
        keep = [0, 2]
        without = ops.region_adain(x[1:], masks[1:, keep], gamma[1:, keep], beta[1:, keep], stats=stats)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, without, rtol=1e-12, atol=1e-12)


def test_all_regions_empty_gives_zero_then_residual(gen):
    x = make_x(gen, 1, 2, 5, 4, torch.float32)
    empty = torch.zeros(1, 1, 5, 4)
    gamma, beta = make_style(gen, 1, 1, 2)
    residual = torch.randn(1, 2, 5, 4, generator=gen)
    y = ops.region_adain(x, empty, gamma, beta, stats="region", residual=residual)
    torch.testing.assert_close(y, residual, rtol=0, atol=0)


def test_empty_region_gradients_are_finite(gen):
    x = make_x(gen, 1, 2, 4, 3).requires_grad_()
    masks = make_masks(gen, 1, 2, 4, 3, "soft")
    masks[:, 1] = 0.0
    masks.requires_grad_()
    gamma, beta = make_style(gen, 1, 2, 2)
    ops.region_adain(x, masks, gamma, beta, stats="region").square().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(masks.grad).all()


def test_empty_batch(gen):
    x = make_x(gen, 0, 3, 5, 4)
    masks = torch.rand(0, 2, 3, 3, dtype=torch.float64)
    mean, var = ops.masked_moments(x, masks)
    assert mean.shape == var.shape == (0, 2, 3)
    assert ops.region_adain(x, masks, torch.ones(0, 2, 3), torch.zeros(0, 2, 3), "region").shape == x.shape


# --------------------------------------------------------------------------------------------------
# Gradients (float64 finite differences)
# --------------------------------------------------------------------------------------------------


def _leaf(t):
    return t.detach().clone().requires_grad_()


@pytest.mark.parametrize("mask_size", [(3, 4), (2, 5)])
def test_gradcheck_masked_moments(gen, mask_size):
    x = _leaf(make_x(gen, 2, 2, 3, 4))
    masks = _leaf(make_masks(gen, 2, 2, *mask_size, "soft"))
    assert torch.autograd.gradcheck(lambda a, m: ops.masked_moments(a, m, eps=1e-3), (x, masks))


@pytest.mark.parametrize("stats", ["global", "region"])
def test_gradcheck_region_adain(gen, stats):
    x = _leaf(make_x(gen, 1, 2, 3, 4))
    masks = _leaf(make_masks(gen, 1, 2, 3, 4, "soft"))
    gamma, beta = (_leaf(t) for t in make_style(gen, 1, 2, 2))
    residual = _leaf(torch.randn(1, 2, 3, 4, generator=gen, dtype=torch.float64))

    def fn(a, m, g, b, r):
        return ops.region_adain(a, m, g, b, stats=stats, eps=1e-3, activation="lrelu", residual=r)

    assert torch.autograd.gradcheck(fn, (x, masks, gamma, beta, residual))


def test_gradcheck_highway_adain(gen):
    x = _leaf(make_x(gen, 1, 2, 3, 4))
    mask = _leaf(make_masks(gen, 1, 1, 2, 2, "soft"))
    styles = [_leaf(0.5 + torch.rand(1, 2, generator=gen, dtype=torch.float64)) for _ in range(4)]
    assert torch.autograd.gradcheck(lambda *a: ops.highway_adain(*a, eps=1e-3), (x, mask, *styles))


@pytest.mark.parametrize("op", ["instance_norm", "layer_norm"])
def test_gradcheck_norms(gen, op):
    x = _leaf(make_x(gen, 2, 3, 3, 2))
    weight = _leaf(0.5 + torch.rand(3, generator=gen, dtype=torch.float64))
    bias = _leaf(torch.randn(3, generator=gen, dtype=torch.float64))
    residual = _leaf(torch.randn(2, 3, 3, 2, generator=gen, dtype=torch.float64))
    fn = getattr(ops, op)
    assert torch.autograd.gradcheck(
        lambda a, w, b, r: fn(a, w, b, eps=1e-3, activation="lrelu", residual=r), (x, weight, bias, residual)
    )


# --------------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------------


def _good_args():
    x = torch.randn(2, 3, 5, 4)
    return x, torch.rand(2, 2, 5, 4), torch.ones(2, 2, 3), torch.zeros(2, 2, 3)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(x=torch.randn(3, 5, 4)), ValueError, r"x must be 4-D .*\(3, 5, 4\)"),
        (dict(x=torch.ones(2, 3, 5, 4, dtype=torch.int64)), TypeError, "x must be a floating-point tensor"),
        (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
        (dict(masks=torch.rand(3, 2, 5, 4)), ValueError, r"masks has batch size 3 but x has 2"),
        (dict(masks=torch.rand(2, 5, 4)), ValueError, r"masks must be 4-D .*\(2, 5, 4\)"),
        (dict(masks=torch.ones(2, 2, 5, 4, dtype=torch.uint8)), TypeError, "masks must be a floating-point"),
        (dict(masks=torch.rand(2, 2, 5, 4, device="meta")), ValueError, "masks is on device meta"),
        (dict(gamma=torch.ones(2, 3)), ValueError, r"gamma must have shape \(N, K, C\) = \(2, 2, 3\), got \(2, 3\)"),
        (dict(beta=torch.zeros(2, 1, 3)), ValueError, r"beta must have shape .*got \(2, 1, 3\)"),
        (dict(stats="local"), ValueError, "stats must be one of .*'local'"),
        (dict(activation="gelu"), ValueError, "activation must be one of .*'gelu'"),
        (dict(residual=torch.randn(2, 3, 4, 5)), ValueError, r"residual must have shape .*got \(2, 3, 4, 5\)"),
        (dict(eps=0.0), ValueError, "eps must be finite and > 0"),
        (dict(eps=-1e-5), ValueError, "eps must be finite and > 0"),
        (dict(eps=torch.tensor(1e-5)), TypeError, "eps must be a Python number"),
        (dict(backend="nope"), ValueError, r"unknown backend 'nope'.*reference"),
    ],
)
def test_region_adain_argument_errors(change, exc, match):
    x, masks, gamma, beta = _good_args()
    kwargs = dict(x=x, masks=masks, gamma=gamma, beta=beta)
    kwargs.update(change)
    with pytest.raises(exc, match=match):
        ops.region_adain(**kwargs)


def test_other_ops_argument_errors():
    x, masks, gamma, beta = _good_args()
    with pytest.raises(ValueError, match=r"masks must have K, Hm, Wm >= 1"):
        ops.masked_moments(x, torch.rand(2, 0, 5, 4))
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        ops.masked_moments(x, masks, backend="nope")
    style = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"mask must have 1 channel\(s\), got shape \(2, 2, 5, 4\)"):
        ops.highway_adain(x, masks, style, style, style, style)
    with pytest.raises(ValueError, match=r"gamma_b must have shape \(N, C\) = \(2, 3\), got \(2, 4\)"):
        ops.highway_adain(x, masks[:, :1], style, style, torch.ones(2, 4), style)
    for op in (ops.instance_norm, ops.layer_norm):
        with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\), got \(4,\)"):
            op(x, weight=torch.ones(4))
        with pytest.raises(ValueError, match="activation must be one of"):
            op(x, activation="tanh")
        with pytest.raises(ValueError, match="x must be 4-D"):
            op(x[0])


# --------------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the backend registry, so registrations made in a test do not leak."""
    monkeypatch.setattr(dispatch, "_REGISTRY", dict(dispatch._REGISTRY))
    return dispatch


def test_reference_is_always_registered_and_auto_picks_the_fastest():
    assert "reference" in ops.available_backends()
    assert "reference" in ops.available_backends("cpu")
    assert ops.resolve_backend("auto", torch.device("cpu")) == ops.available_backends("cpu")[0]
    assert ops.resolve_backend("reference", "cpu") == "reference"


def test_auto_resolves_to_reference_when_it_is_the_only_backend(registry):
    registry._REGISTRY.clear()  # as before any kernel registers itself
    registry.register_backend("reference", ops.reference.IMPLS, differentiable=True)
    assert ops.available_backends() == ["reference"]
    for device in ("cpu", "cuda", torch.device("meta")):
        assert ops.resolve_backend("auto", device) == "reference"
    with pytest.raises(ValueError, match=r"unknown backend 'triton'; available backends: \['reference'\]"):
        ops.resolve_backend("triton", "cpu")


def test_registered_backend_takes_priority_for_the_ops_it_implements(registry, gen):
    calls = []

    def fake_region_adain(*args):
        calls.append(args)
        return ops.reference.region_adain_impl(*args)

    registry.register_backend("fake", {"region_adain": fake_region_adain}, devices=("cpu",), priority=10_000,
                              dtypes=(torch.float32,))
    assert ops.available_backends()[0] == "fake"
    assert ops.resolve_backend("auto", "cpu", op="region_adain", dtype=torch.float32) == "fake"
    assert ops.resolve_backend("auto", "cpu", op="masked_moments", dtype=torch.float32) != "fake"
    assert ops.resolve_backend("auto", "cpu", op="region_adain", dtype=torch.float64) != "fake"
    assert ops.resolve_backend("auto", "cuda", op="region_adain", dtype=torch.float32) != "fake"

    x = make_x(gen, 1, 2, 4, 3, torch.float32)
    masks = make_masks(gen, 1, 1, 4, 3, "soft")
    gamma, beta = make_style(gen, 1, 1, 2)
    y = ops.region_adain(x, masks, gamma, beta, stats="region")
    assert len(calls) == 1
    torch.testing.assert_close(y, ops.region_adain(x, masks, gamma, beta, stats="region", backend="reference"))
    assert len(calls) == 1

    # Not differentiable: auto falls back when gradients are needed, an explicit request is refused.
    ops.region_adain(x.clone().requires_grad_(), masks, gamma, beta)
    assert len(calls) == 1
    with torch.no_grad():
        ops.region_adain(x.clone().requires_grad_(), masks, gamma, beta)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="backend 'fake' is unavailable here: it is not differentiable"):
        ops.region_adain(x.clone().requires_grad_(), masks, gamma, beta, backend="fake")
    with pytest.raises(ValueError, match=r"backend 'fake' is unavailable here: it does not implement 'masked_moments'"):
        ops.masked_moments(x, masks, backend="fake")
    with pytest.raises(ValueError, match=r"does not support dtype torch.float64"):
        ops.region_adain(x.double(), masks, gamma, beta, backend="fake")


def test_device_filter(registry):
    registry._REGISTRY.clear()  # only the reference, whatever kernels this install has
    registry.register_backend("reference", ops.reference.IMPLS, differentiable=True)
    registry.register_backend("gpu_only", {"layer_norm": lambda *a: None}, devices=("cuda",))
    assert "gpu_only" in ops.available_backends()
    assert "gpu_only" not in ops.available_backends("cpu")
    assert ops.resolve_backend("auto", "cpu", op="layer_norm") == "reference"
    with pytest.raises(ValueError, match=r"'gpu_only' is unavailable here: it does not support device type 'cpu'"):
        ops.layer_norm(torch.randn(1, 2, 3, 3), backend="gpu_only")


def test_register_backend_accepts_a_module_and_rejects_bad_tables(registry):
    registry._REGISTRY.clear()  # the real cpu/cuda/triton backends would clash with the names used here
    registry.register_backend("reference", ops.reference.IMPLS, differentiable=True)
    module = types.ModuleType("fake_kernels")
    module.instance_norm = ops.reference.instance_norm_impl
    module.helper = lambda: None  # not an op name: ignored for modules
    backend = registry.register_backend("mod", module, devices=("cpu",))
    assert set(backend.impls) == {"instance_norm"}
    assert backend.priority == 50
    assert registry.register_backend("cuda", {"layer_norm": print}, devices=("cuda",)).priority > \
        registry.register_backend("triton", {"layer_norm": print}, devices=("cuda",)).priority > \
        registry.register_backend("cpu", {"layer_norm": print}, devices=("cpu",)).priority > 0
    with pytest.raises(ValueError, match="already registered"):
        registry.register_backend("mod", module)
    with pytest.raises(ValueError, match=r"unknown op name\(s\) \['softmax'\]"):
        registry.register_backend("bad", {"softmax": print})
    with pytest.raises(ValueError, match="other than 'auto'"):
        registry.register_backend("auto", {"layer_norm": print})
    with pytest.raises(TypeError, match="not callable"):
        registry.register_backend("bad", {"layer_norm": 3})
    with pytest.raises(ValueError, match="cannot be unregistered"):
        registry.unregister_backend("reference")
    registry.unregister_backend("mod")
    assert "mod" not in ops.available_backends()
