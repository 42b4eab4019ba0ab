"""The op family's specification, in plain PyTorch.

Every faster backend (C++, CUDA, Triton) is tested against these functions, so they are written to be
literal rather than fast: each formula in a docstring appears in the code in the same form. They run on
any device, in any floating dtype (float64 included), and are differentiable with respect to every
tensor argument.

Conventions shared by every op
------------------------------
x
    (N, C, H, W), any floating dtype, NCHW-contiguous, channels_last or strided.
masks
    (N, K, Hm, Wm) soft region weights, nominally in [0, 1], any floating (or bool) dtype. Values are
    NOT checked against [0, 1] (that would cost a full pass over the masks); weights outside it are used
    as given. Masks are first cast to the accumulation dtype and then, when (Hm, Wm) != (H, W), resized
    with ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing).
accumulation dtype
    float64 when x is float64, float32 for every other floating dtype (float16, bfloat16, float32, ...).
    All statistics and all arithmetic happen in it; statistics are *returned* in it.
outputs of the normalising ops
    same shape and dtype as x (cast once, at the very end). Memory format: channels_last when x is
    channels_last (and not also NCHW-contiguous), contiguous NCHW otherwise.
order of the epilogue
    normalise -> (affine / region mix) -> activation -> ``+ residual``.
    activation is None, "relu" or "lrelu" (leaky ReLU, negative slope ``LRELU_SLOPE`` = 0.01).
eps
    a Python number > 0; it appears both in the weight denominators of ``masked_moments`` and inside
    ``sqrt(var + eps)``.

Argument errors raise TypeError (wrong kind or dtype) or ValueError (wrong shape, value or device) with
a message that names the argument and the shapes seen. The ``check_*_args`` functions are shared with
``lmt_fast.ops`` so every backend reports bad input the same way.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.01
ACTIVATIONS = (None, "relu", "lrelu")
STATS_MODES = ("global", "region")


# --------------------------------------------------------------------------------------------------
# Shared conventions
# --------------------------------------------------------------------------------------------------


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def resize_masks(masks: torch.Tensor, size, dtype: torch.dtype) -> torch.Tensor:
    """Cast ``masks`` to ``dtype``, then resize bilinearly (align_corners=False) to ``size`` if needed."""
    masks = masks.to(dtype)
    if tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False)
    return masks


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels_last x, contiguous NCHW for anything else."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _activate(y: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "relu":
        return F.relu(y)
    if activation == "lrelu":
        return F.leaky_relu(y, LRELU_SLOPE)
    return y


def _epilogue(y, x, activation, residual):
    """activation, then residual, then one cast back to x's dtype and layout."""
    y = _activate(y, activation)
    if residual is not None:
        y = y + residual.to(y.dtype)
    return y.to(dtype=x.dtype, memory_format=output_memory_format(x))


# --------------------------------------------------------------------------------------------------
# Argument checks (shared by every backend through lmt_fast.ops)
# --------------------------------------------------------------------------------------------------


# They run on every call of a public op, so they read each tensor's shape and device once and compare
# torch.Size with plain tuples (the tuple() conversions are left to the error messages).


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _check_tensor(name: str, t, device: Optional[torch.device] = None, allow_bool: bool = False) -> None:
    """t is a floating (or bool) tensor, on ``device`` (x's) unless that is None."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or (allow_bool and t.dtype == torch.bool)):
        kinds = "a floating-point (or bool)" if allow_bool else "a floating-point"
        raise TypeError(f"{name} must be {kinds} tensor, got dtype {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on device {t.device} but x is on {device}; move both to one device")


def _check_x(x) -> torch.Size:
    """Checks x; returns its shape."""
    _check_tensor("x", x)
    shape = x.shape
    if len(shape) != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {tuple(shape)}")
    if shape[1] < 1 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"x must have C, H, W >= 1, got shape {tuple(shape)}")
    return shape


def _check_masks(name: str, masks, x_shape: torch.Size, device, k: Optional[int] = None) -> torch.Size:
    """Checks masks against x's shape and device; returns the masks' shape."""
    _check_tensor(name, masks, device, allow_bool=True)
    shape = masks.shape
    if len(shape) != 4:
        raise ValueError(f"{name} must be 4-D (N, K, Hm, Wm), got shape {tuple(shape)}")
    if shape[0] != x_shape[0]:
        raise ValueError(
            f"{name} has batch size {shape[0]} but x has {x_shape[0]} "
            f"({name} shape {tuple(shape)}, x shape {tuple(x_shape)})"
        )
    if shape[1] < 1 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name} must have K, Hm, Wm >= 1, got shape {tuple(shape)}")
    if k is not None and shape[1] != k:
        raise ValueError(f"{name} must have {k} channel(s), got shape {tuple(shape)}")
    return shape


def _check_shaped(name: str, t, device, expected: tuple, layout: str) -> None:
    _check_tensor(name, t, device)
    if t.shape != expected:
        raise ValueError(f"{name} must have shape {layout} = {expected}, got {_shape(t)}")


def _check_eps(eps) -> None:
    # A float is by far the common case; isinstance(eps, numbers.Real) is a slower ABC check.
    if type(eps) is not float and (isinstance(eps, bool) or not isinstance(eps, numbers.Real)):
        raise TypeError(f"eps must be a Python number, got {type(eps).__name__}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be finite and > 0, got {eps}")


def _check_epilogue(x_shape: torch.Size, device, activation, residual) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if residual is not None:
        _check_shaped("residual", residual, device, tuple(x_shape), "x.shape")


def check_masked_moments_args(x, masks, eps) -> None:
    x_shape = _check_x(x)
    _check_masks("masks", masks, x_shape, x.device)
    _check_eps(eps)


def check_region_adain_args(x, masks, gamma, beta, stats, eps, activation, residual) -> None:
    x_shape = _check_x(x)
    device = x.device
    k = _check_masks("masks", masks, x_shape, device)[1]
    expected = (x_shape[0], k, x_shape[1])
    _check_shaped("gamma", gamma, device, expected, "(N, K, C)")
    _check_shaped("beta", beta, device, expected, "(N, K, C)")
    if stats not in STATS_MODES:
        raise ValueError(f"stats must be one of {STATS_MODES}, got {stats!r}")
    _check_eps(eps)
    _check_epilogue(x_shape, device, activation, residual)


def check_highway_adain_args(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps) -> None:
    x_shape = _check_x(x)
    device = x.device
    _check_masks("mask", mask, x_shape, device, k=1)
    expected = (x_shape[0], x_shape[1])
    for name, t in (("gamma_f", gamma_f), ("beta_f", beta_f), ("gamma_b", gamma_b), ("beta_b", beta_b)):
        _check_shaped(name, t, device, expected, "(N, C)")
    _check_eps(eps)


def check_norm_args(x, weight, bias, eps, activation, residual) -> None:
    """Checks for instance_norm and layer_norm (same argument list)."""
    x_shape = _check_x(x)
    device = x.device
    expected = (x_shape[1],)
    if weight is not None:
        _check_shaped("weight", weight, device, expected, "(C,)")
    if bias is not None:
        _check_shaped("bias", bias, device, expected, "(C,)")
    _check_eps(eps)
    _check_epilogue(x_shape, device, activation, residual)


# --------------------------------------------------------------------------------------------------
# Implementations without checks (what the "reference" backend registers)
# --------------------------------------------------------------------------------------------------


def _moments(xa: torch.Tensor, m: torch.Tensor, eps: float):
    """masked_moments for x and masks already in the accumulation dtype and at x's size."""
    denom = (m.sum(dim=(2, 3)) + eps).unsqueeze(-1)  # (N, K, 1): W_k + eps
    mean = torch.einsum("nkhw,nchw->nkc", m, xa) / denom
    # Centred second moment, one region at a time so memory stays at one extra copy of x.
    centred = [
        (m[:, j, None] * (xa - mean[:, j, :, None, None]) ** 2).sum(dim=(2, 3)) for j in range(m.shape[1])
    ]
    var = torch.stack(centred, dim=1) / denom
    return mean, var


def _spatial_moments(xa: torch.Tensor, dims=(2, 3)):
    """Plain mean and biased (centred) variance over ``dims``, kept broadcastable."""
    mean = xa.mean(dim=dims, keepdim=True)
    var = ((xa - mean) ** 2).mean(dim=dims, keepdim=True)
    return mean, var


def masked_moments_impl(x, masks, eps=1e-5):
    acc = accumulation_dtype(x.dtype)
    return _moments(x.to(acc), resize_masks(masks, x.shape[-2:], acc), eps)


def region_adain_impl(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None):
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    m = resize_masks(masks, x.shape[-2:], acc)
    gamma, beta = gamma.to(acc), beta.to(acc)
    if stats == "global":
        mean_g, var_g = _spatial_moments(xa)
        x_hat_global = (xa - mean_g) / torch.sqrt(var_g + eps)
    else:
        mean_r, var_r = _moments(xa, m, eps)
    y = None
    for j in range(m.shape[1]):
        if stats == "global":
            x_hat = x_hat_global
        else:
            x_hat = (xa - mean_r[:, j, :, None, None]) / torch.sqrt(var_r[:, j, :, None, None] + eps)
        term = m[:, j : j + 1] * (gamma[:, j, :, None, None] * x_hat + beta[:, j, :, None, None])
        y = term if y is None else y + term
    return _epilogue(y, x, activation, residual)


def highway_adain_impl(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5):
    acc = accumulation_dtype(x.dtype)
    m = mask.to(acc)
    masks = torch.cat([m, 1 - m], dim=1)
    gamma = torch.stack([gamma_f.to(acc), gamma_b.to(acc)], dim=1)
    beta = torch.stack([beta_f.to(acc), beta_b.to(acc)], dim=1)
    return region_adain_impl(x, masks, gamma, beta, stats="global", eps=eps)


def _affine_norm(x, dims, weight, bias, eps, activation, residual):
    acc = accumulation_dtype(x.dtype)
    xa = x.to(acc)
    mean, var = _spatial_moments(xa, dims)
    y = (xa - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.to(acc)[None, :, None, None]
    if bias is not None:
        y = y + bias.to(acc)[None, :, None, None]
    return _epilogue(y, x, activation, residual)


def instance_norm_impl(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    return _affine_norm(x, (2, 3), weight, bias, eps, activation, residual)


def layer_norm_impl(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    return _affine_norm(x, (1, 2, 3), weight, bias, eps, activation, residual)


# The table the dispatcher registers as the "reference" backend. Other backends provide the same
# names with the same call signature; they receive arguments already checked by lmt_fast.ops.
IMPLS = {
    "masked_moments": masked_moments_impl,
    "region_adain": region_adain_impl,
    "highway_adain": highway_adain_impl,
    "instance_norm": instance_norm_impl,
    "layer_norm": layer_norm_impl,
}


# --------------------------------------------------------------------------------------------------
# The specification (checked entry points)
# --------------------------------------------------------------------------------------------------


def masked_moments(x, masks, eps=1e-5):
    """Mask-weighted per-channel mean and biased, centred variance of each region.

    With masks resized to H x W (see module conventions) and, for every (n, k, c), sums over all H*W pixels::

        W_k    = sum_hw m_k
        mean_k = sum_hw m_k * x_c / (W_k + eps)
        var_k  = sum_hw m_k * (x_c - mean_k)**2 / (W_k + eps)

    The variance is the centred two-pass form, never E[x^2] - E[x]^2 (which cancels catastrophically
    for features with a large mean). eps in the denominators makes the result defined for any mask.

    Empty region (defined behaviour): a region whose mask is all zeros (W_k = 0) gets mean = 0 and
    var = 0 exactly, finite, never NaN. There is no threshold: as W_k -> 0 the eps in the denominator
    shrinks mean and var smoothly towards 0.

    Args:
        x: (N, C, H, W) floating tensor, any layout.
        masks: (N, K, Hm, Wm) soft weights, floating or bool, any dtype; values are not checked
            against [0, 1]. Resized bilinearly (align_corners=False) when (Hm, Wm) != (H, W).
        eps: number > 0 added to W_k.

    Returns:
        (mean, var), each (N, K, C), contiguous, in the accumulation dtype: float32 for float16,
        bfloat16 and float32 inputs; float64 for float64 inputs.
    """
    check_masked_moments_args(x, masks, eps)
    return masked_moments_impl(x, masks, eps)


def region_adain(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None):
    """Region-wise AdaIN: each region renormalises x to its own style, blended by the soft masks.

    ::

        y = sum_k m_k * (gamma_k * (x - mu_k) / sqrt(var_k + eps) + beta_k)
        y = activation(y) + residual

    with m_k the resized masks and gamma_k, beta_k broadcast over H x W. The masks are used as given:
    they are not renormalised to sum to one, so where sum_k m_k < 1 the output is pulled towards 0.

    stats="global" (LOMIT's highway AdaIN, HAdaIN): mu_k = mu and var_k = var for every k, the plain
    per-(n, c) spatial mean and biased variance of x, mean over H*W with no eps in the denominator.
    stats="region" (MGST): mu_k, var_k = masked_moments(x, masks, eps) (eps in the denominators too).

    Empty region with stats="region": mean = var = 0 (see masked_moments) and the term is multiplied by
    m_k = 0, so it contributes exactly 0; the output is finite and equal to the output without that region.

    Args:
        x: (N, C, H, W) floating tensor, any layout.
        masks: (N, K, Hm, Wm), K >= 1, as in masked_moments (values not checked against [0, 1]).
        gamma, beta: (N, K, C) per-region scale and shift (e.g. the exemplar's std and mean).
        stats: "global" or "region".
        eps: number > 0.
        activation: None, "relu" or "lrelu" (slope 0.01), applied to the sum.
        residual: optional tensor of x's shape added after the activation.

    Returns:
        Tensor of x's shape and dtype; channels_last if x is channels_last, else contiguous NCHW.
        Computed in the accumulation dtype (float32, or float64 for float64 x) and cast once at the end.
    """
    check_region_adain_args(x, masks, gamma, beta, stats, eps, activation, residual)
    return region_adain_impl(x, masks, gamma, beta, stats, eps, activation, residual)


def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5):
    """LOMIT's highway AdaIN: foreground style where ``mask`` is 1, background style where it is 0.

    Exactly ``region_adain(x, cat([mask, 1 - mask], dim=1), stack([gamma_f, gamma_b], 1),
    stack([beta_f, beta_b], 1), stats="global", eps=eps)``. The stack is built before resizing (the mask is
    cast to the accumulation dtype first); since bilinear weights sum to one this equals stacking the
    resized masks up to rounding. So::

        x_hat = (x - mu) / sqrt(var + eps)       # plain spatial moments of x per (n, c)
        y = m * (gamma_f * x_hat + beta_f) + (1 - m) * (gamma_b * x_hat + beta_b)

    A pure highway (background passed through untouched) is gamma_b = sigma(x), beta_b = mu(x), the
    input's own per-(n, c) statistics. With gamma_b = sqrt(var(x) + eps) the background is x exactly
    (up to rounding); with gamma_b = sqrt(var(x)) it is x up to a relative O(eps / var) error.

    Args:
        x: (N, C, H, W) floating tensor, any layout.
        mask: (N, 1, Hm, Wm) foreground weight (values not checked against [0, 1]); resized like masks.
        gamma_f, beta_f: (N, C) foreground style (from the exemplar).
        gamma_b, beta_b: (N, C) background style (from the input).
        eps: number > 0.

    Returns:
        Tensor of x's shape, dtype and memory format (see region_adain).
    """
    check_highway_adain_args(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)
    return highway_adain_impl(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)


def instance_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    """Instance norm with optional per-channel affine, activation and residual.

    ::

        y = (x - mean_hw(x)) / sqrt(var_hw(x) + eps) * weight + bias     # per (n, c); biased var
        y = activation(y) + residual

    Matches ``F.instance_norm(x, weight=weight, bias=bias, eps=eps)`` (batch statistics) when
    activation and residual are None.

    Args:
        x: (N, C, H, W) floating tensor, any layout.
        weight, bias: optional (C,) affine parameters (weight None = 1, bias None = 0).
        eps: number > 0.
        activation: None, "relu" or "lrelu" (slope 0.01).
        residual: optional tensor of x's shape added after the activation.

    Returns:
        Tensor of x's shape, dtype and memory format (see region_adain).
    """
    check_norm_args(x, weight, bias, eps, activation, residual)
    return instance_norm_impl(x, weight, bias, eps, activation, residual)


def layer_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    """LayerNorm as GroupNorm with one group: per-sample statistics over (C, H, W), per-channel affine.

    ::

        y = (x - mean_chw(x)) / sqrt(var_chw(x) + eps) * weight_c + bias_c   # per n; biased var
        y = activation(y) + residual

    Matches ``F.group_norm(x, 1, weight, bias, eps)`` when activation and residual are None. This is
    not MUNIT's LayerNorm (unbiased std, eps added to the std).

    Args:
        x: (N, C, H, W) floating tensor, any layout.
        weight, bias: optional (C,) per-channel affine parameters.
        eps: number > 0.
        activation: None, "relu" or "lrelu" (slope 0.01).
        residual: optional tensor of x's shape added after the activation.

    Returns:
        Tensor of x's shape, dtype and memory format (see region_adain).
    """
    check_norm_args(x, weight, bias, eps, activation, residual)
    return layer_norm_impl(x, weight, bias, eps, activation, residual)
