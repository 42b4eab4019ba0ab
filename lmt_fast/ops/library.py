"""Python side of the compiled op library ``torch.ops.lmt`` (schemas: ``csrc/torch/bindings.cpp``).

Importing this module (once per process) registers, for every device the library serves:

* fake (meta) kernels, so the ops trace under ``torch.compile`` / ``torch.export`` / FakeTensor;
* autograd: the backward recomputes the forward through the reference ops (``reference.*_impl``) and
  differentiates that, so gradients are the spec's by construction (higher order too);
* fake kernels (no autograd: inference only) for the Winograd tile transforms that
  ``lmt_fast.runtime.winograd`` runs on the CPU, when this build of _C has them.

and provides ``IMPLS``: the five op implementations with the reference implementations' signatures, for
a backend to register (``lmt_fast.ops.cpu``; a CUDA backend can register the same table for "cuda").
They do the Python-side half of the schema contract: masks cast to the accumulation dtype and resized
exactly as ``reference.resize_masks`` does, activation names turned into the schema's integer codes.
``highway_adain`` has no schema of its own: it is ``region_adain`` with masks ``[m, 1 - m]`` and
stacked styles (a (N, 2, H, W) tensor is small next to x); the kernels recognise an exactly complementary
pair and then read one mask plane instead of two. On the CPU, calls that need no gradient skip the
dispatcher where it has nothing to do (``_run``).

Raises ImportError, with the reason, when the compiled extension is not available, so the backends
that need it are reported unavailable instead of failing ``import lmt_fast``.
"""

from __future__ import annotations

import torch

from lmt_fast import _extension

from . import reference
from .dispatch import needs_grad

if _extension.extension is None:
    raise ImportError(f"the compiled op library is unavailable: {_extension.unavailable_reason}", name="lmt_fast._C")

OP_NAMES = ("masked_moments", "region_adain", "instance_norm", "layer_norm")
if not all(hasattr(torch.ops.lmt, name) for name in OP_NAMES):  # an old or foreign build of _C
    raise ImportError(f"lmt_fast._C does not define the ops torch.ops.lmt.{{{', '.join(OP_NAMES)}}}; rebuild it")

# Storage dtypes the kernels read and write (statistics in float32; float64 stays float64).
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

# The schema's `int activation`.
ACTIVATION_CODES = {None: 0, "relu": 1, "lrelu": 2}
ACTIVATION_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}


def has_kernel(dispatch_key: str) -> bool:
    """Whether every op of the library has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return all(torch._C._dispatch_has_kernel_for_dispatch_key(f"lmt::{name}", dispatch_key) for name in OP_NAMES)


# --------------------------------------------------------------------------------------------------
# Backend implementations (reference signatures; arguments already checked by lmt_fast.ops)
# --------------------------------------------------------------------------------------------------


# The overloads, looked up once (three attribute lookups through torch.ops per call otherwise).
_MASKED_MOMENTS = torch.ops.lmt.masked_moments.default
_REGION_ADAIN = torch.ops.lmt.region_adain.default
_INSTANCE_NORM = torch.ops.lmt.instance_norm.default
_LAYER_NORM = torch.ops.lmt.layer_norm.default
# OpOverload.__call__ only forwards to the C++ callable `_op`; calling that directly saves a Python frame
# where no tracer needs to see the overload (torch.compile is given the overload itself).
_DIRECT = {op: getattr(op, "_op", op) for op in (_MASKED_MOMENTS, _REGION_ADAIN, _INSTANCE_NORM, _LAYER_NORM)}
# lmt_fast._C's direct entry points into the CPU kernels (csrc/torch/module.cpp); None in an older build.
_CPU_ENTRY = {
    op: getattr(_extension.extension, f"{name}_cpu", None)
    for op, name in (
        (_MASKED_MOMENTS, "masked_moments"),
        (_REGION_ADAIN, "region_adain"),
        (_INSTANCE_NORM, "instance_norm"),
        (_LAYER_NORM, "layer_norm"),
    )
}
_BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd
_has_torch_function = torch._C._has_torch_function
_is_compiling = torch.compiler.is_compiling
_FLOAT64, _FLOAT32 = torch.float64, torch.float32


def _run(op, tensors, *args):
    """Call ``op(*args)``; when none of ``tensors`` (its tensor arguments) needs a gradient, below the
    autograd layer, and if the dispatcher would then hand the call to the CPU kernel, straight to it.

    The autograd kernel that register_autograd installs is Python and costs about 5 us a call even when
    nothing requires grad (a model's forward at inference); skipping it is what it would do anyway. The
    dispatcher itself costs ~2 us from Python; lmt_fast._C's entry points skip it where it has nothing to
    do (they decline, returning None, any call it would route elsewhere; __torch_function__ overrides and
    modes, which see torch.ops calls, are ruled out here). Under torch.compile the op is called as is, for
    the tracer to see the autograd formula.
    """
    if _is_compiling() or needs_grad(tensors):
        return op(*args)
    direct = _CPU_ENTRY[op]
    if direct is not None and not _has_torch_function(tensors):
        out = direct(*args)
        if out is not None:
            return out
    with _BELOW_AUTOGRAD():
        return _DIRECT[op](*args)


def _masks_at(masks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """reference.resize_masks to x's size in the accumulation dtype; masks already so are passed as they are."""
    acc = _FLOAT64 if x.dtype == _FLOAT64 else _FLOAT32
    m_shape, x_shape = masks.shape, x.shape
    if masks.dtype == acc and m_shape[2] == x_shape[2] and m_shape[3] == x_shape[3]:
        return masks
    return reference.resize_masks(masks, x_shape[-2:], acc)


def masked_moments(x, masks, eps=1e-5):
    masks = _masks_at(masks, x)
    return _run(_MASKED_MOMENTS, (x, masks), x, masks, float(eps))


def region_adain(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None):
    masks = _masks_at(masks, x)
    return _run(_REGION_ADAIN, (x, masks, gamma, beta, residual), x, masks, gamma, beta, stats == "region",
                float(eps), ACTIVATION_CODES[activation], residual)


# (base, sign) = ([0, 1], [1, -1]) as (1, 2, 1, 1) tensors per (dtype, device): [m, 1 - m] = base + m * sign.
_PAIR_CONSTANTS: dict = {}
_dispatch_modes = torch._C._len_torch_dispatch_stack


def _pair_constants(m: torch.Tensor) -> tuple:
    # Normal tensors even under inference_mode: autograd refuses inference tensors in later calls.
    with torch.inference_mode(False):
        base = torch.tensor([0.0, 1.0], dtype=m.dtype, device=m.device).view(1, 2, 1, 1)
        sign = torch.tensor([1.0, -1.0], dtype=m.dtype, device=m.device).view(1, 2, 1, 1)
    _PAIR_CONSTANTS[(m.dtype, m.device)] = (base, sign)
    return base, sign


def _complementary_pair(m: torch.Tensor) -> torch.Tensor:
    """[m, 1 - m] along dim 1: in a plain eager call one op with cached constants (a cat of m and 1 - m is
    three ops), exact since 0 + m * 1 == m and 1 + m * -1 == 1 - m in floating point (a fused multiply-add
    rounds once, to the same value). Traced or under a dispatch mode (a FakeTensorMode would fake cached
    constants for every later call) it is the plain cat."""
    if _is_compiling() or _dispatch_modes():
        return torch.cat([m, 1 - m], dim=1)
    base, sign = _PAIR_CONSTANTS.get((m.dtype, m.device)) or _pair_constants(m)
    return torch.addcmul(base, m, sign)


def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5):
    # The spec stacks [m, 1 - m] before resizing; resizing m first (bilinear weights sum to one, so the
    # two agree up to rounding) makes the pair exactly complementary, which the kernels run faster.
    # gamma/beta are widened to the accumulation dtype by the op (stack promotes mixed dtypes exactly).
    masks = _complementary_pair(_masks_at(mask, x))
    gamma, beta = torch.stack([gamma_f, gamma_b], dim=1), torch.stack([beta_f, beta_b], dim=1)
    return _run(_REGION_ADAIN, (x, masks, gamma, beta), x, masks, gamma, beta, False, float(eps), 0, None)


def instance_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    return _run(_INSTANCE_NORM, (x, weight, bias, residual), x, weight, bias, float(eps),
                ACTIVATION_CODES[activation], residual)


def layer_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    return _run(_LAYER_NORM, (x, weight, bias, residual), x, weight, bias, float(eps), ACTIVATION_CODES[activation],
                residual)


IMPLS = {
    "masked_moments": masked_moments,
    "region_adain": region_adain,
    "highway_adain": highway_adain,
    "instance_norm": instance_norm,
    "layer_norm": layer_norm,
}


# --------------------------------------------------------------------------------------------------
# Fake kernels: output metadata exactly as the compiled kernels produce it
# --------------------------------------------------------------------------------------------------


def _like_x(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=reference.output_memory_format(x))


@torch.library.register_fake("lmt::masked_moments")
def _masked_moments_fake(x, masks, eps):
    shape = (x.shape[0], masks.shape[1], x.shape[1])
    acc = reference.accumulation_dtype(x.dtype)
    return x.new_empty(shape, dtype=acc), x.new_empty(shape, dtype=acc)


@torch.library.register_fake("lmt::region_adain")
def _region_adain_fake(x, masks, gamma, beta, region_stats, eps, activation, residual):
    return _like_x(x)


@torch.library.register_fake("lmt::instance_norm")
def _instance_norm_fake(x, weight, bias, eps, activation, residual):
    return _like_x(x)


@torch.library.register_fake("lmt::layer_norm")
def _layer_norm_fake(x, weight, bias, eps, activation, residual):
    return _like_x(x)


# --------------------------------------------------------------------------------------------------
# Winograd F(4x4, 3x3) tile transforms (lmt_fast.runtime.winograd): fakes only, no autograd (inference)
# --------------------------------------------------------------------------------------------------

# Not part of the op family above; an older build of _C may lack them (the runtime then uses torch ops).
WINOGRAD_OP_NAMES = ("winograd_input_transform", "winograd_output_transform")
HAS_WINOGRAD = all(hasattr(torch.ops.lmt, name) for name in WINOGRAD_OP_NAMES)
WINOGRAD_POINTS = 36


def winograd_planes(tiles, channels, dtype, device) -> torch.Tensor:
    """An empty (36, tiles, channels) tensor laid out as the transforms' v and m are: each point's
    (tiles, channels) plane contiguous, the planes an odd number of 64-byte lines apart (planes 4 KB apart
    make the transforms ~1.6x slower: cache set conflicts and store/load aliasing). Mirrors
    ``winograd_point_stride`` in csrc/torch/bindings.cpp; torch.bmm reads and writes this layout in place."""
    line = 64 // torch.empty((), dtype=dtype).element_size()
    lines = -(-(tiles * channels) // line)
    stride = (lines + 1 - lines % 2) * line
    return torch.empty_strided((WINOGRAD_POINTS, tiles, channels), (stride, channels, 1), dtype=dtype, device=device)


if HAS_WINOGRAD:

    @torch.library.register_fake("lmt::winograd_input_transform")
    def _winograd_input_transform_fake(x, pad, tiles_h, tiles_w):
        return winograd_planes(x.shape[0] * tiles_h * tiles_w, x.shape[1], x.dtype, x.device)

    @torch.library.register_fake("lmt::winograd_output_transform")
    def _winograd_output_transform_fake(m, bias, n, out_h, out_w, tiles_h, tiles_w):
        return torch.empty((n, m.shape[2], out_h, out_w), dtype=m.dtype, device=m.device,
                           memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------------
# Autograd: differentiate the reference forward, recomputed from the saved inputs
# --------------------------------------------------------------------------------------------------


def _reference_vjp(ctx, forward, tensors, grad_outputs):
    """Gradients of ``forward(*tensors)`` for the inputs with ``ctx.needs_input_grad``, else None.

    ``tensors`` are the op's tensor inputs in schema order (None for an absent optional); ``forward``
    takes them positionally. ``torch.func.vjp`` differentiates the recomputation on its own level: only
    the direct dependence on each input counts (autograd.grad on the saved tensors would also follow
    their history, e.g. to a weight shared with an earlier layer, and free that graph), and under
    ``create_graph=True`` the result stays differentiable, so higher-order gradients are correct too.
    """
    needs = [t is not None and ctx.needs_input_grad[i] for i, t in zip(ctx.tensor_positions, tensors)]
    wanted = [i for i, need in enumerate(needs) if need]
    if not wanted:
        return [None] * len(tensors)

    def forward_of_wanted(*values):
        args = list(tensors)
        for i, value in zip(wanted, values):
            args[i] = value
        outputs = forward(*args)
        return outputs if isinstance(outputs, tuple) else (outputs,)

    outputs, vjp = torch.func.vjp(forward_of_wanted, *(tensors[i] for i in wanted))
    cotangents = tuple(torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grad_outputs))
    grads = dict(zip(wanted, vjp(cotangents)))
    return [grads.get(i) for i in range(len(tensors))]


def _setup(ctx, tensors, positions, **options):
    ctx.save_for_backward(*tensors)  # None (an absent optional) is saved, and given back, as None
    ctx.tensor_positions = positions
    for key, value in options.items():
        setattr(ctx, key, value)


def _saved(ctx):
    return list(ctx.saved_tensors)


def _masked_moments_setup(ctx, inputs, output):
    x, masks, eps = inputs
    _setup(ctx, (x, masks), (0, 1), eps=eps)


def _masked_moments_backward(ctx, grad_mean, grad_var):
    def forward(x, masks):
        return reference.masked_moments_impl(x, masks, ctx.eps)

    gx, gm = _reference_vjp(ctx, forward, _saved(ctx), (grad_mean, grad_var))
    return gx, gm, None


def _region_adain_setup(ctx, inputs, output):
    x, masks, gamma, beta, region_stats, eps, activation, residual = inputs
    _setup(ctx, (x, masks, gamma, beta, residual), (0, 1, 2, 3, 7), region_stats=region_stats, eps=eps,
           activation=activation)


def _region_adain_backward(ctx, grad):
    stats = "region" if ctx.region_stats else "global"
    activation = ACTIVATION_NAMES[ctx.activation]

    def forward(x, masks, gamma, beta, residual):
        return reference.region_adain_impl(x, masks, gamma, beta, stats, ctx.eps, activation, residual)

    gx, gm, gg, gb, gr = _reference_vjp(ctx, forward, _saved(ctx), (grad,))
    return gx, gm, gg, gb, None, None, None, gr


def _norm_setup(ctx, inputs, output):
    x, weight, bias, eps, activation, residual = inputs
    _setup(ctx, (x, weight, bias, residual), (0, 1, 2, 5), eps=eps, activation=activation)


def _norm_backward(reference_impl):
    def backward(ctx, grad):
        activation = ACTIVATION_NAMES[ctx.activation]

        def forward(x, weight, bias, residual):
            return reference_impl(x, weight, bias, ctx.eps, activation, residual)

        gx, gw, gb, gr = _reference_vjp(ctx, forward, _saved(ctx), (grad,))
        return gx, gw, gb, None, None, gr

    return backward


torch.library.register_autograd(
    "lmt::masked_moments", _masked_moments_backward, setup_context=_masked_moments_setup
)
torch.library.register_autograd("lmt::region_adain", _region_adain_backward, setup_context=_region_adain_setup)
torch.library.register_autograd(
    "lmt::instance_norm", _norm_backward(reference.instance_norm_impl), setup_context=_norm_setup
)
torch.library.register_autograd("lmt::layer_norm", _norm_backward(reference.layer_norm_impl), setup_context=_norm_setup)
