"""Device functions shared by the kernels.

Statistics are (W, mean_w, M2) triples in fp32: the weight sum, the weighted mean and the centred sum
of squares. A tile's triple is exact (two passes over registers); triples of tiles and of split ranges
combine with Chan's parallel formula, so no path ever forms E[x^2] - E[x]^2. Weights are the resized
masks (region statistics) or 1 on every pixel of the row (plain statistics). A triple whose weights sum
to exactly 0 counts as empty: right for masks >= 0 (the spec's nominal [0, 1]); signed weights that
cancel (the spec does not forbid them) would differ from the reference.

Per-region values live in [K_PAD, BLOCK_C] arrays, row k for region k; `k_idx` is the [K_PAD, 1] column
of region numbers.
"""
import triton
import triton.language as tl

from ..reference import LRELU_SLOPE

ACTIVATION_CODES = {None: 0, "relu": 1, "lrelu": 2}
_LRELU_SLOPE = tl.constexpr(LRELU_SLOPE)


@triton.jit
def activate(y, ACTIVATION: tl.constexpr):
    # `y < 0` rather than max(y, 0): a NaN stays NaN, as in F.relu.
    if ACTIVATION == 1:
        y = tl.where(y < 0, 0.0, y)
    elif ACTIVATION == 2:
        y = tl.where(y < 0, y * _LRELU_SLOPE, y)
    return y


@triton.jit
def tile_moments(x, w):
    """(W, mean_w, M2) per channel of a [BLOCK_C, BLOCK_P] tile with pixel weights w [BLOCK_P]."""
    w_sum = tl.sum(w, axis=0)
    safe = tl.where(w_sum != 0, w_sum, 1.0)
    mean = tl.sum(x * w[None, :], axis=1) / safe
    d = x - mean[:, None]
    m2 = tl.sum(w[None, :] * d * d, axis=1)
    return w_sum, mean, m2


@triton.jit
def merge_moments(w_a, mean_a, m2_a, w_b, mean_b, m2_b):
    """Chan's combination of two triples (elementwise; either side may be empty)."""
    w = w_a + w_b
    share_b = tl.where(w != 0, w_b / tl.where(w != 0, w, 1.0), 0.0)
    delta = mean_b - mean_a
    return w, mean_a + delta * share_b, m2_a + m2_b + delta * delta * w_a * share_b


@triton.jit
def reduce_lanes(w, mean, m2, lane_ok):
    """Combine the triples along axis 1 of [R, L] arrays into [R] (lanes where lane_ok is False are
    skipped): exact, by two passes over the lanes."""
    w = tl.where(lane_ok, w, 0.0)
    w_sum = tl.sum(w, axis=1)
    mean_all = tl.sum(w * mean, axis=1) / tl.where(w_sum != 0, w_sum, 1.0)
    d = mean - mean_all[:, None]
    m2_all = tl.sum(tl.where(lane_ok, m2 + w * d * d, 0.0), axis=1)
    return w_sum, mean_all, m2_all


@triton.jit
def finish_moments(w, mean_w, m2, eps, REGION_STATS: tl.constexpr):
    """The spec's (mean, var) from a triple.

    Region statistics divide by W + eps (reference.masked_moments): mean = sum(m x) / (W + eps) and
    var = sum(m (x - mean)^2) / (W + eps) = (M2 + W (mean_w - mean)^2) / (W + eps); an empty region
    gives exactly 0 and 0. Plain statistics divide by the pixel count W.
    """
    if REGION_STATS:
        denom = w + eps
        mean = mean_w * (w / denom)
        offset = mean_w - mean
        var = (m2 + w * offset * offset) / denom
    else:
        mean = mean_w
        var = m2 / tl.where(w != 0, w, 1.0)
    return mean, var


@triton.jit
def region_weight(m_row, k: tl.constexpr, p, p_ok, hw, HIGHWAY: tl.constexpr):
    """Weight of region k at pixels p; with HIGHWAY one mask m stands for the two regions [m, 1 - m]."""
    if HIGHWAY:
        w = tl.load(m_row + p, mask=p_ok, other=0.0).to(tl.float32)
        if k == 1:
            w = tl.where(p_ok, 1.0 - w, 0.0)
    else:
        w = tl.load(m_row + k * hw + p, mask=p_ok, other=0.0).to(tl.float32)
    return w


@triton.jit
def load_tile(ptr, c, c_ok, stride_c, p, p_ok, stride_p):
    """A [BLOCK_C, BLOCK_P] tile of a row-addressed tensor, as fp32 (0 outside the row)."""
    offsets = c[:, None] * stride_c + p[None, :] * stride_p
    return tl.load(ptr + offsets, mask=c_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def tile_moments_by_region(x, m_row, p, p_ok, hw, k_idx,
                           K_STATS: tl.constexpr, MASKED_STATS: tl.constexpr,
                           K_PAD: tl.constexpr, BLOCK_C: tl.constexpr):
    """Triples of one tile for each statistics region, as [K_PAD, BLOCK_C] arrays."""
    w_t = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    mean_t = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    m2_t = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    for k in tl.static_range(K_STATS):
        if MASKED_STATS:
            w = tl.load(m_row + k * hw + p, mask=p_ok, other=0.0).to(tl.float32)
        else:
            w = p_ok.to(tl.float32)
        tw, tmean, tm2 = tile_moments(x, w)
        here = k_idx == k
        w_t = tl.where(here, tw, w_t)
        mean_t = tl.where(here, tmean[None, :], mean_t)
        m2_t = tl.where(here, tm2[None, :], m2_t)
    return w_t, mean_t, m2_t


@triton.jit
def accumulate_moments(x_row, m_row, c, c_ok, stride_c, stride_p, p_begin, p_end, hw, k_idx,
                       K_STATS: tl.constexpr, MASKED_STATS: tl.constexpr, K_PAD: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Triples of pixels [p_begin, p_end) of a channel tile, one BLOCK_P chunk at a time."""
    w_acc = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    mean_acc = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    m2_acc = tl.zeros([K_PAD, BLOCK_C], tl.float32)
    for start in range(p_begin, p_end, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        p_ok = p < p_end
        x = load_tile(x_row, c, c_ok, stride_c, p, p_ok, stride_p)
        tw, tmean, tm2 = tile_moments_by_region(x, m_row, p, p_ok, hw, k_idx,
                                                K_STATS, MASKED_STATS, K_PAD, BLOCK_C)
        w_acc, mean_acc, m2_acc = merge_moments(w_acc, mean_acc, m2_acc, tw, tmean, tm2)
    return w_acc, mean_acc, m2_acc


@triton.jit
def affine_coefficients(var, eps, scale_row, shift_row, stride_k, stride_c, c, c_ok, k_idx,
                        K_APPLY: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr):
    """Per-region (scale, shift) = (gamma * rstd, beta) as [K_PAD, BLOCK_C] arrays."""
    rstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))  # IEEE-rounded, as torch: tl.sqrt is approximate
    ok = (k_idx < K_APPLY) & c_ok[None, :]
    offsets = k_idx * stride_k + c[None, :] * stride_c
    scale = rstd
    if HAS_SCALE:
        scale = tl.load(scale_row + offsets, mask=ok, other=0.0).to(tl.float32) * rstd
    shift = tl.zeros_like(rstd)
    if HAS_SHIFT:
        shift = tl.load(shift_row + offsets, mask=ok, other=0.0).to(tl.float32)
    return scale, shift


@triton.jit
def _row(values, k_idx, k: tl.constexpr):
    """Row k of a [K_PAD, BLOCK_C] array, as [BLOCK_C]."""
    return tl.sum(tl.where(k_idx == k, values, 0.0), axis=0)


@triton.jit
def normalize_tile(x, mean, scale, shift, m_row, p, p_ok, hw, k_idx,
                   K_APPLY: tl.constexpr, MASKED: tl.constexpr, HIGHWAY: tl.constexpr):
    """y = sum_k m_k (scale_k (x - mean_k) + shift_k), or scale (x - mean) + shift without masks."""
    if MASKED:
        y = tl.zeros_like(x)
        for k in tl.static_range(K_APPLY):
            w = region_weight(m_row, k, p, p_ok, hw, HIGHWAY)
            mean_k = _row(mean, k_idx, k)
            scale_k = _row(scale, k_idx, k)
            shift_k = _row(shift, k_idx, k)
            y += w[None, :] * (scale_k[:, None] * (x - mean_k[:, None]) + shift_k[:, None])
    else:
        y = _row(scale, k_idx, 0)[:, None] * (x - _row(mean, k_idx, 0)[:, None]) + _row(shift, k_idx, 0)[:, None]
    return y


@triton.jit
def store_output(y, out_row, res_row, c, c_ok, p, p_ok, out_stride_c, out_stride_p, res_stride_c,
                 res_stride_p, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """Epilogue in the spec's order: activation, + residual, one cast to the output dtype."""
    y = activate(y, ACTIVATION)
    if HAS_RESIDUAL:
        y += load_tile(res_row, c, c_ok, res_stride_c, p, p_ok, res_stride_p)
    offsets = c[:, None] * out_stride_c + p[None, :] * out_stride_p
    tl.store(out_row + offsets, y.to(out_row.dtype.element_ty), mask=c_ok[:, None] & p_ok[None, :])
