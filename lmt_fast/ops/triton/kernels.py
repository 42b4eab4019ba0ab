"""The four Triton kernels of the op family.

Addressing: every 4-D tensor is read as ``base + n * stride_n + c * stride_c + p * stride_p`` with
p = h * W + w, which covers NCHW (stride_p = 1) and channels_last (stride_c = 1) alike; strides are
arguments, and Triton specialises the ones equal to 1, so the contiguous axis gets vector loads. Masks
arrive at x's size with (KM, H*W) contiguous, in fp32/fp16/bf16, and are widened to fp32 on load.
Sample offsets are int64 (N * C * H * W may pass 2^31).

moments_kernel            statistics only: masked_moments (one-pass / looped) and split partials
combine_partials_kernel   sums split partials (and, for layer_norm, channels) into (mean, var)
normalize_rows_kernel     statistics + write in one program per channel tile (one-pass / looped)
normalize_apply_kernel    the split path's write, from (mean, var) tables
"""
import triton
import triton.language as tl

from ._helpers import (
    accumulate_moments,
    affine_coefficients,
    finish_moments,
    load_tile,
    merge_moments,
    reduce_lanes,
    normalize_tile,
    store_output,
    tile_moments_by_region,
)


@triton.jit
def _broadcast_row0(values, k_idx):
    """Every row of a [K_PAD, BLOCK_C] array set to row 0 (plain statistics shared by all regions)."""
    return tl.zeros_like(values) + tl.sum(tl.where(k_idx == 0, values, 0.0), axis=0)[None, :]


@triton.jit
def moments_kernel(
    x_ptr, m_ptr, out_w_ptr, out_a_ptr, out_b_ptr,
    N, C, HW, split_len, eps,
    x_stride_n, x_stride_c, x_stride_p, m_stride_n,
    K_STATS: tl.constexpr, K_PAD: tl.constexpr, REGION_STATS: tl.constexpr, FINISH: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Program (split s, sample n, channel tile): the triples of pixels [s * split_len, +split_len).

    FINISH: write (mean, var) to out_a / out_b as (N, K, C) (one range covers the row).
    Otherwise: write the triple to out_w / out_a / out_b as (S, N, K, C) partials.
    """
    pid = tl.program_id(0)
    num_ct = tl.cdiv(C, BLOCK_C)
    ct = pid % num_ct
    n = (pid // num_ct) % N
    s = pid // (num_ct * N)
    c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    k_idx = tl.arange(0, K_PAD)[:, None]
    n64 = n.to(tl.int64)

    p_begin = s * split_len
    p_end = tl.minimum(p_begin + split_len, HW)
    w, mean_w, m2 = accumulate_moments(x_ptr + n64 * x_stride_n, m_ptr + n64 * m_stride_n, c, c_ok,
                                       x_stride_c, x_stride_p, p_begin, p_end, HW, k_idx,
                                       K_STATS, REGION_STATS, K_PAD, BLOCK_C, BLOCK_P)

    offsets = ((s.to(tl.int64) * N + n) * K_STATS + k_idx) * C + c[None, :]
    ok = (k_idx < K_STATS) & c_ok[None, :]
    if FINISH:
        mean, var = finish_moments(w, mean_w, m2, eps, REGION_STATS)
        tl.store(out_a_ptr + offsets, mean, mask=ok)
        tl.store(out_b_ptr + offsets, var, mask=ok)
    else:
        tl.store(out_w_ptr + offsets, w, mask=ok)
        tl.store(out_a_ptr + offsets, mean_w, mask=ok)
        tl.store(out_b_ptr + offsets, m2, mask=ok)


@triton.jit
def combine_partials_kernel(
    part_w_ptr, part_mean_ptr, part_m2_ptr, mean_ptr, var_ptr,
    OUTPUTS, GROUP, SPLITS, eps,
    REGION_STATS: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_G: tl.constexpr,
):
    """Output o combines partials [s, o * GROUP + g] for every split s and g < GROUP.

    GROUP = 1 for statistics per (n, k, c); GROUP = C for layer_norm (per sample n).
    """
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < OUTPUTS
    w = tl.zeros([BLOCK_O, 1], tl.float32)
    mean_w = tl.zeros([BLOCK_O, 1], tl.float32)
    m2 = tl.zeros([BLOCK_O, 1], tl.float32)
    row_len = OUTPUTS * GROUP  # partials are small: int32 offsets suffice
    for s in range(SPLITS):
        for g0 in range(0, GROUP, BLOCK_G):
            g = g0 + tl.arange(0, BLOCK_G)
            ok = o_ok[:, None] & (g < GROUP)[None, :]
            offsets = s * row_len + o[:, None] * GROUP + g[None, :]
            tw = tl.load(part_w_ptr + offsets, mask=ok, other=0.0)
            tmean = tl.load(part_mean_ptr + offsets, mask=ok, other=0.0)
            tm2 = tl.load(part_m2_ptr + offsets, mask=ok, other=0.0)
            tw, tmean, tm2 = reduce_lanes(tw, tmean, tm2, ok)
            w, mean_w, m2 = merge_moments(w, mean_w, m2, tw[:, None], tmean[:, None], tm2[:, None])
    mean, var = finish_moments(w, mean_w, m2, eps, REGION_STATS)
    tl.store(mean_ptr + o[:, None], mean, mask=o_ok[:, None])
    tl.store(var_ptr + o[:, None], var, mask=o_ok[:, None])


@triton.jit
def normalize_rows_kernel(
    x_ptr, m_ptr, scale_ptr, shift_ptr, res_ptr, out_ptr,
    C, HW, eps,
    x_stride_n, x_stride_c, x_stride_p, m_stride_n,
    param_stride_n, param_stride_k, param_stride_c,
    res_stride_n, res_stride_c, res_stride_p,
    out_stride_n, out_stride_c, out_stride_p,
    K_STATS: tl.constexpr, K_APPLY: tl.constexpr, K_PAD: tl.constexpr,
    REGION_STATS: tl.constexpr, MASKED: tl.constexpr, HIGHWAY: tl.constexpr, LAYER: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr, RESIDENT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Program (sample n, channel tile): statistics of its rows, then y for them.

    RESIDENT (one-pass): BLOCK_P covers H*W; x is loaded once and y computed from registers.
    Otherwise (looped): one sweep for the statistics, a second to write y.
    LAYER: the tile holds every channel, and statistics are pooled over channels too.
    """
    pid = tl.program_id(0)
    num_ct = tl.cdiv(C, BLOCK_C)
    ct = pid % num_ct
    n64 = (pid // num_ct).to(tl.int64)
    c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    k_idx = tl.arange(0, K_PAD)[:, None]
    x_row = x_ptr + n64 * x_stride_n
    m_row = m_ptr + n64 * m_stride_n
    res_row = res_ptr + n64 * res_stride_n
    out_row = out_ptr + n64 * out_stride_n

    if RESIDENT:
        p = tl.arange(0, BLOCK_P)
        p_ok = p < HW
        x = load_tile(x_row, c, c_ok, x_stride_c, p, p_ok, x_stride_p)
        w, mean_w, m2 = tile_moments_by_region(x, m_row, p, p_ok, HW, k_idx,
                                               K_STATS, REGION_STATS, K_PAD, BLOCK_C)
    else:
        w, mean_w, m2 = accumulate_moments(x_row, m_row, c, c_ok, x_stride_c, x_stride_p, 0, HW, HW,
                                           k_idx, K_STATS, REGION_STATS, K_PAD, BLOCK_C, BLOCK_P)
    if LAYER:  # pool the channels: every lane gets the sample's triple
        w_s, mean_s, m2_s = reduce_lanes(w, mean_w, m2, c_ok[None, :])
        w = tl.zeros_like(w) + w_s[:, None]
        mean_w = tl.zeros_like(w) + mean_s[:, None]
        m2 = tl.zeros_like(w) + m2_s[:, None]
    mean, var = finish_moments(w, mean_w, m2, eps, REGION_STATS)
    if not REGION_STATS:
        mean = _broadcast_row0(mean, k_idx)
        var = _broadcast_row0(var, k_idx)
    scale, shift = affine_coefficients(var, eps, scale_ptr + n64 * param_stride_n,
                                       shift_ptr + n64 * param_stride_n, param_stride_k, param_stride_c,
                                       c, c_ok, k_idx, K_APPLY, HAS_SCALE, HAS_SHIFT)

    if RESIDENT:
        y = normalize_tile(x, mean, scale, shift, m_row, p, p_ok, HW, k_idx, K_APPLY, MASKED, HIGHWAY)
        store_output(y, out_row, res_row, c, c_ok, p, p_ok, out_stride_c, out_stride_p,
                     res_stride_c, res_stride_p, ACTIVATION, HAS_RESIDUAL)
    else:
        # Last chunk first: the end of the row was read most recently, so it is likeliest in L2.
        num_chunks = tl.cdiv(HW, BLOCK_P)
        for i in range(num_chunks):
            p = (num_chunks - 1 - i) * BLOCK_P + tl.arange(0, BLOCK_P)
            p_ok = p < HW
            x = load_tile(x_row, c, c_ok, x_stride_c, p, p_ok, x_stride_p)
            y = normalize_tile(x, mean, scale, shift, m_row, p, p_ok, HW, k_idx, K_APPLY, MASKED, HIGHWAY)
            store_output(y, out_row, res_row, c, c_ok, p, p_ok, out_stride_c, out_stride_p,
                         res_stride_c, res_stride_p, ACTIVATION, HAS_RESIDUAL)


@triton.jit
def normalize_apply_kernel(
    x_ptr, m_ptr, mean_ptr, var_ptr, scale_ptr, shift_ptr, res_ptr, out_ptr,
    N, C, HW, eps,
    x_stride_n, x_stride_c, x_stride_p, m_stride_n,
    stat_stride_n, stat_stride_k, stat_stride_c,
    param_stride_n, param_stride_k, param_stride_c,
    res_stride_n, res_stride_c, res_stride_p,
    out_stride_n, out_stride_c, out_stride_p,
    K_APPLY: tl.constexpr, K_PAD: tl.constexpr, MASKED: tl.constexpr, HIGHWAY: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    ACTIVATION: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Program (pixel block, sample n, channel tile): y from finished (mean, var) tables.

    The tables are read through strides, so one kernel serves statistics per (n, k, c), per (n, c)
    (stat_stride_k = 0: every region shares them) and per n (layer_norm: stat_stride_c = 0 too).
    """
    pid = tl.program_id(0)
    num_ct = tl.cdiv(C, BLOCK_C)
    ct = pid % num_ct
    n = (pid // num_ct) % N
    pb = pid // (num_ct * N)
    n64 = n.to(tl.int64)
    c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    k_idx = tl.arange(0, K_PAD)[:, None]
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < HW

    stat_offsets = n64 * stat_stride_n + k_idx * stat_stride_k + c[None, :] * stat_stride_c
    stat_ok = (k_idx < K_APPLY) & c_ok[None, :]
    mean = tl.load(mean_ptr + stat_offsets, mask=stat_ok, other=0.0)
    var = tl.load(var_ptr + stat_offsets, mask=stat_ok, other=0.0)
    scale, shift = affine_coefficients(var, eps, scale_ptr + n64 * param_stride_n,
                                       shift_ptr + n64 * param_stride_n, param_stride_k, param_stride_c,
                                       c, c_ok, k_idx, K_APPLY, HAS_SCALE, HAS_SHIFT)
    m_row = m_ptr + n64 * m_stride_n
    x = load_tile(x_ptr + n64 * x_stride_n, c, c_ok, x_stride_c, p, p_ok, x_stride_p)
    y = normalize_tile(x, mean, scale, shift, m_row, p, p_ok, HW, k_idx, K_APPLY, MASKED, HIGHWAY)
    store_output(y, out_ptr + n64 * out_stride_n, res_ptr + n64 * res_stride_n, c, c_ok, p, p_ok,
                 out_stride_c, out_stride_p, res_stride_c, res_stride_p, ACTIVATION, HAS_RESIDUAL)
