"""Python side of the kernels: prepare operands, pick a plan, launch.

Everything here is traceable by torch.compile (shapes and strides only, no reads of tensor values), so
the same functions are the bodies of the `lmt_triton::*` ops and, under FakeTensorMode, their fake
kernels. Kernels are launched through `torch.library.wrap_triton` so that Inductor sees them.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor
from torch.library import wrap_triton
from triton.runtime.jit import JITFunction

from ..reference import output_memory_format, resize_masks
from . import _heuristics as heur
from ._helpers import ACTIVATION_CODES
from .kernels import combine_partials_kernel, moments_kernel, normalize_apply_kernel, normalize_rows_kernel

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_STATS_DTYPE = torch.float32
_COMBINE_BLOCK_O, _COMBINE_BLOCK_G = 1024, 1024


def pixel_strides(t: torch.Tensor):
    """(stride_n, stride_c, stride_p) with element (n, c, h, w) at n*sn + c*sc + (h*W + w)*sp, or None
    when H and W cannot be walked as one axis (then the caller makes the tensor contiguous)."""
    _, _, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h == 1 and w == 1:
        sp = 1
    elif h == 1:
        sp = sw
    elif w == 1:
        sp = sh
    elif sh == w * sw:
        sp = sw
    else:
        return None
    return sn, sc, sp


def _is_channels_last_order(strides, c: int, hw: int) -> bool:
    """Channels are the contiguous axis, so tiles should span channels."""
    return c > 1 and hw > 1 and strides[1] == 1


def _addressable(t: torch.Tensor, memory_format: torch.memory_format):
    """t and its pixel strides; a copy in `memory_format` when H, W cannot be walked as one axis or
    when offsets within a sample would overflow int32 (the kernels' in-sample arithmetic)."""
    strides = pixel_strides(t)
    _, c, h, w = t.shape
    if strides is None or (c - 1) * strides[1] + (h * w - 1) * strides[2] >= 2**31:
        t = t.contiguous(memory_format=memory_format)
        strides = pixel_strides(t)
    return t, strides


def _check_supported(x: torch.Tensor) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the triton backend supports x of dtype {[str(d) for d in SUPPORTED_DTYPES]}, "
                        f"got {x.dtype}; use backend='reference' for it")
    n, c, h, w = x.shape
    if c * h * w >= 2**31:
        raise ValueError(f"the triton backend needs C*H*W < 2**31 per sample, got shape {tuple(x.shape)}")


def _prepare_masks(masks: Optional[torch.Tensor], x: torch.Tensor):
    """Masks as the kernels read them: (N, KM, H, W) with (KM, H, W) contiguous, and the sample stride.

    Masks already at x's size in fp32/fp16/bf16 are read as they are (the kernels widen them to fp32,
    exactly as the spec's cast does); others are cast to fp32 and resized as in the spec. x stands in
    when there are no masks (the pointer is then never read).
    """
    if masks is None:
        return x, 0
    h, w = x.shape[-2:]
    if tuple(masks.shape[-2:]) != (h, w) or masks.dtype not in SUPPORTED_DTYPES:
        masks = resize_masks(masks, (h, w), _STATS_DTYPE)
    k = masks.shape[1]
    if not (masks.stride(3) == 1 and masks.stride(2) == w and (k == 1 or masks.stride(1) == h * w)):
        masks = masks.contiguous()
    return masks, masks.stride(0)


def _prepare_params(scale: Optional[torch.Tensor], shift: Optional[torch.Tensor], x: torch.Tensor):
    """Per-region or per-channel affine parameters: (scale, shift, (stride_n, stride_k, stride_c)).

    (N, K, C) tensors (AdaIN styles) are addressed per sample and region; (C,) tensors (norm weights)
    are shared by every sample (stride 0).
    """
    scale = None if scale is None else scale.contiguous()
    shift = None if shift is None else shift.contiguous()
    ref = scale if scale is not None else shift
    if ref is None:
        strides = (0, 0, 0)
    elif ref.dim() == 1:
        strides = (0, 0, 1)
    else:
        strides = (ref.shape[1] * ref.shape[2], ref.shape[2], 1)
    return (x if scale is None else scale), (x if shift is None else shift), strides


def _interpreted(kernel) -> bool:
    return not isinstance(kernel, JITFunction)  # TRITON_INTERPRET=1 makes @triton.jit an InterpretedFunction


def _launch(kernel, grid, args, constexprs, num_warps):
    if _interpreted(kernel):
        # wrap_triton cannot trace interpreted kernels. On fake tensors (the fake kernel: only output
        # metadata matters) the launch is skipped; a graph capture would silently lose the kernel, so
        # it fails loudly instead.
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if any(isinstance(t, FunctionalTensor) for t in tensors):
            raise RuntimeError("lmt_triton ops cannot be captured by torch.compile/AOTAutograd under "
                               "TRITON_INTERPRET=1 (the interpreter has no traceable kernels); use "
                               "backend='eager' for torch.compile, or a GPU")
        if any(isinstance(t, FakeTensor) for t in tensors):
            return
    wrap_triton(kernel)[grid](*args, **constexprs, num_warps=num_warps)


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def _split_statistics(x, x_strides, m, m_stride_n, plan, k_stats, region_stats, layer, eps, out=None):
    """Split path, passes 1 and 2: partial triples per H*W range, then (mean, var) tables.

    Returns (mean, var, (stride_n, stride_k, stride_c)) addressed like the apply kernel expects;
    `out` = contiguous (mean, var) buffers of the right shape to fill.
    """
    n, c, h, w = x.shape
    hw = h * w
    shape = (plan.splits, n, k_stats, c)
    part_w = torch.empty(shape, dtype=_STATS_DTYPE, device=x.device)
    part_mean = torch.empty(shape, dtype=_STATS_DTYPE, device=x.device)
    part_m2 = torch.empty(shape, dtype=_STATS_DTYPE, device=x.device)
    num_ct = heur.cdiv(c, plan.block_c)
    _launch(moments_kernel, (plan.splits * n * num_ct,),
            (x, m, part_w, part_mean, part_m2, n, c, hw, plan.split_len, eps, *x_strides, m_stride_n),
            dict(K_STATS=k_stats, K_PAD=heur.next_pow2(k_stats), REGION_STATS=region_stats, FINISH=False,
                 BLOCK_C=plan.block_c, BLOCK_P=plan.block_p),
            plan.num_warps)

    if layer:  # one (mean, var) per sample, pooled over splits and channels
        outputs, group, stat_shape, stat_strides = n, c, (n,), (1, 0, 0)
    else:
        outputs, group, stat_shape = n * k_stats * c, 1, (n, k_stats, c)
        stat_strides = (k_stats * c, c if region_stats else 0, 1)
    if out is None:
        out = (torch.empty(stat_shape, dtype=_STATS_DTYPE, device=x.device),
               torch.empty(stat_shape, dtype=_STATS_DTYPE, device=x.device))
    mean, var = out
    block_o = 1 if layer else min(_COMBINE_BLOCK_O, heur.next_pow2(outputs))
    block_g = min(_COMBINE_BLOCK_G, heur.next_pow2(group))
    _launch(combine_partials_kernel, (heur.cdiv(outputs, block_o),),
            (part_w, part_mean, part_m2, mean, var, outputs, group, plan.splits, eps),
            dict(REGION_STATS=region_stats, BLOCK_O=block_o, BLOCK_G=block_g),
            heur.num_warps_for(block_o * block_g))
    return mean, var, stat_strides


def masked_moments(x: torch.Tensor, masks: torch.Tensor, eps: float, out=None):
    """(mean, var), each (N, K, C) fp32; `out` = (mean, var) buffers to fill instead of new ones."""
    _check_supported(x)
    n, c, h, w = x.shape
    k = masks.shape[1]
    if out is None:
        mean = torch.empty((n, k, c), dtype=_STATS_DTYPE, device=x.device)
        var = torch.empty((n, k, c), dtype=_STATS_DTYPE, device=x.device)
    else:
        mean, var = out
        if any(t.shape != (n, k, c) or not t.is_contiguous() or t.dtype != _STATS_DTYPE for t in out):
            raise ValueError(f"out must be two contiguous float32 tensors of shape {(n, k, c)}")
    if n == 0:
        return mean, var
    x, x_strides = _addressable(x, torch.contiguous_format)
    m, m_stride_n = _prepare_masks(masks, x)
    hw = h * w
    plan = heur.plan_rows(n, c, hw, _is_channels_last_order(x_strides, c, hw), x.device, regions=k)
    if plan.path == heur.SPLIT:
        _split_statistics(x, x_strides, m, m_stride_n, plan, k, True, False, eps, out=(mean, var))
        return mean, var
    _launch(moments_kernel, (n * heur.cdiv(c, plan.block_c),),
            (x, m, m, mean, var, n, c, hw, plan.split_len, eps, *x_strides, m_stride_n),  # out_w unused
            dict(K_STATS=k, K_PAD=heur.next_pow2(k), REGION_STATS=True, FINISH=True,
                 BLOCK_C=plan.block_c, BLOCK_P=plan.block_p),
            plan.num_warps)
    return mean, var


# --------------------------------------------------------------------------------------------------
# Normalisation: y = sum_k m_k (scale_k (x - mean_k) + shift_k), activation, + residual
# --------------------------------------------------------------------------------------------------


def normalize(x: torch.Tensor, *, masks: Optional[torch.Tensor], regions: int, highway: bool = False,
              region_stats: bool = False, layer: bool = False, scale: Optional[torch.Tensor] = None,
              shift: Optional[torch.Tensor] = None, eps: float, activation: Optional[str] = None,
              residual: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The write side of every normalising op.

    masks: None (instance / layer norm), (N, regions, Hm, Wm), or (N, 1, Hm, Wm) with highway=True,
        which stands for the two regions [m, 1 - m].
    region_stats: statistics per region (masked moments) instead of plain per-(n, c) moments.
    layer: plain statistics per sample over C*H*W (GroupNorm with one group).
    scale, shift: (N, regions, C) per-region styles, or (C,) per-channel affine, or None.
    out: the buffer to write (tests pass a poisoned one); by default a new tensor in x's memory format.
    """
    _check_supported(x)
    n, c, h, w = x.shape
    hw = h * w
    fmt = output_memory_format(x)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    if n == 0:
        return out
    x, x_strides = _addressable(x, fmt)
    out_strides = pixel_strides(out)
    if out_strides is None:
        raise ValueError(f"out must be addressable as (N, C, H*W), got strides {out.stride()}")
    channels_last = _is_channels_last_order(x_strides, c, hw)
    has_residual = residual is not None
    if has_residual:
        residual, res_strides = _addressable(residual, fmt)
        if _is_channels_last_order(res_strides, c, hw) != channels_last:
            residual = residual.contiguous(memory_format=fmt)  # same walk order as x: whole loads
            res_strides = pixel_strides(residual)
    else:
        residual, res_strides = x, (0, 0, 0)
    m, m_stride_n = _prepare_masks(masks, x)
    scale_t, shift_t, param_strides = _prepare_params(scale, shift, x)
    k_stats = regions if region_stats else 1
    flags = dict(K_APPLY=regions, K_PAD=heur.next_pow2(regions), MASKED=masks is not None, HIGHWAY=highway,
                 HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
                 HAS_RESIDUAL=has_residual, ACTIVATION=ACTIVATION_CODES[activation])

    if layer:
        plan = heur.plan_samples(n, c, hw, channels_last, x.device)
    else:
        plan = heur.plan_rows(n, c, hw, channels_last, x.device, regions=regions)
    if plan.path != heur.SPLIT:
        _launch(normalize_rows_kernel, (n * heur.cdiv(c, plan.block_c),),
                (x, m, scale_t, shift_t, residual, out, c, hw, eps, *x_strides, m_stride_n, *param_strides,
                 *res_strides, *out_strides),
                dict(flags, K_STATS=k_stats, REGION_STATS=region_stats, LAYER=layer,
                     RESIDENT=plan.path == heur.ONE_PASS, BLOCK_C=plan.block_c, BLOCK_P=plan.block_p),
                plan.num_warps)
        return out

    mean, var, stat_strides = _split_statistics(x, x_strides, m, m_stride_n, plan, k_stats, region_stats,
                                                layer, eps)
    block_c, block_p, num_warps = heur.elementwise_tile(c, hw, channels_last)
    grid = (heur.cdiv(hw, block_p) * n * heur.cdiv(c, block_c),)
    _launch(normalize_apply_kernel, grid,
            (x, m, mean, var, scale_t, shift_t, residual, out, n, c, hw, eps, *x_strides, m_stride_n,
             *stat_strides, *param_strides, *res_strides, *out_strides),
            dict(flags, BLOCK_C=block_c, BLOCK_P=block_p),
            num_warps)
    return out


# --------------------------------------------------------------------------------------------------
# The ops, in the reference impls' argument order
# --------------------------------------------------------------------------------------------------


def region_adain(x, masks, gamma, beta, stats, eps, activation, residual, out=None):
    return normalize(x, masks=masks, regions=masks.shape[1], region_stats=stats == "region", scale=gamma,
                     shift=beta, eps=eps, activation=activation, residual=residual, out=out)


def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps, out=None):
    gamma = torch.stack([gamma_f, gamma_b], dim=1)  # (N, 2, C): region 0 = foreground, 1 = background
    beta = torch.stack([beta_f, beta_b], dim=1)
    return normalize(x, masks=mask, regions=2, highway=True, scale=gamma, shift=beta, eps=eps, out=out)


def instance_norm(x, weight, bias, eps, activation, residual, out=None):
    return normalize(x, masks=None, regions=1, scale=weight, shift=bias, eps=eps, activation=activation,
                     residual=residual, out=out)


def layer_norm(x, weight, bias, eps, activation, residual, out=None):
    return normalize(x, masks=None, regions=1, layer=True, scale=weight, shift=bias, eps=eps,
                     activation=activation, residual=residual, out=out)
