"""The `lmt_triton::*` custom ops and the backend's impl table.

Each op is a `torch.library.triton_op`: eager calls run the launcher directly, torch.compile traces into
the kernels (no graph break), and the launcher itself, run on fake tensors, is the fake kernel.
Gradients come from the reference: backward re-runs the reference impl under `torch.func.vjp`, which is
exact and traceable; the forward pass is where the kernels earn their keep.

The impl functions take the reference impls' arguments. Their keyword-only `_out` is a test hook: it
writes into a caller-owned buffer (bypassing the op and autograd) so tests can poison the output.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from . import launch


def register_reference_autograd(op, reference_impl) -> None:
    """Backward of `op` = vjp of `reference_impl` at the saved inputs (floating tensors only)."""

    def setup_context(ctx, inputs, output):
        ctx.tensor_slots = [i for i, a in enumerate(inputs) if isinstance(a, Tensor)]
        ctx.other_inputs = [None if isinstance(a, Tensor) else a for a in inputs]
        ctx.save_for_backward(*(inputs[i] for i in ctx.tensor_slots))

    def backward(ctx, *grads):
        inputs = list(ctx.other_inputs)
        for slot, tensor in zip(ctx.tensor_slots, ctx.saved_tensors):
            inputs[slot] = tensor
        wanted = [i for i in ctx.tensor_slots
                  if ctx.needs_input_grad[i] and inputs[i].is_floating_point()]
        result = [None] * len(inputs)
        if not wanted:
            return tuple(result)

        def forward(*primals):
            args = list(inputs)
            for slot, primal in zip(wanted, primals):
                args[slot] = primal
            return reference_impl(*args)

        outputs, vjp = torch.func.vjp(forward, *(inputs[i] for i in wanted))
        flat_outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        cotangents = tuple(torch.zeros_like(o) if g is None else g for g, o in zip(grads, flat_outputs))
        input_grads = vjp(cotangents if isinstance(outputs, tuple) else cotangents[0])
        for slot, grad in zip(wanted, input_grads):
            result[slot] = grad
        return tuple(result)

    op.register_autograd(backward, setup_context=setup_context)


# --------------------------------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------------------------------


@torch.library.triton_op("lmt_triton::masked_moments", mutates_args=())
def masked_moments_op(x: Tensor, masks: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return launch.masked_moments(x, masks, eps)


@torch.library.triton_op("lmt_triton::region_adain", mutates_args=())
def region_adain_op(x: Tensor, masks: Tensor, gamma: Tensor, beta: Tensor, stats: str, eps: float,
                    activation: Optional[str], residual: Optional[Tensor]) -> Tensor:
    return launch.region_adain(x, masks, gamma, beta, stats, eps, activation, residual)


@torch.library.triton_op("lmt_triton::highway_adain", mutates_args=())
def highway_adain_op(x: Tensor, mask: Tensor, gamma_f: Tensor, beta_f: Tensor, gamma_b: Tensor,
                     beta_b: Tensor, eps: float) -> Tensor:
    return launch.highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)


@torch.library.triton_op("lmt_triton::instance_norm", mutates_args=())
def instance_norm_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                     activation: Optional[str], residual: Optional[Tensor]) -> Tensor:
    return launch.instance_norm(x, weight, bias, eps, activation, residual)


@torch.library.triton_op("lmt_triton::layer_norm", mutates_args=())
def layer_norm_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                  activation: Optional[str], residual: Optional[Tensor]) -> Tensor:
    return launch.layer_norm(x, weight, bias, eps, activation, residual)


register_reference_autograd(masked_moments_op, reference.masked_moments_impl)
register_reference_autograd(region_adain_op, reference.region_adain_impl)
register_reference_autograd(highway_adain_op, reference.highway_adain_impl)
register_reference_autograd(instance_norm_op, reference.instance_norm_impl)
register_reference_autograd(layer_norm_op, reference.layer_norm_impl)


# --------------------------------------------------------------------------------------------------
# Impls (the reference impls' signatures; arguments arrive checked by lmt_fast.ops)
# --------------------------------------------------------------------------------------------------


def masked_moments(x, masks, eps=1e-5, *, _out=None):
    if _out is not None:
        return launch.masked_moments(x, masks, float(eps), out=_out)
    return masked_moments_op(x, masks, float(eps))


def region_adain(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None, *,
                 _out=None):
    if _out is not None:
        return launch.region_adain(x, masks, gamma, beta, stats, float(eps), activation, residual, out=_out)
    return region_adain_op(x, masks, gamma, beta, stats, float(eps), activation, residual)


def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5, *, _out=None):
    if _out is not None:
        return launch.highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, float(eps), out=_out)
    return highway_adain_op(x, mask, gamma_f, beta_f, gamma_b, beta_b, float(eps))


def instance_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, *, _out=None):
    if _out is not None:
        return launch.instance_norm(x, weight, bias, float(eps), activation, residual, out=_out)
    return instance_norm_op(x, weight, bias, float(eps), activation, residual)


def layer_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, *, _out=None):
    if _out is not None:
        return launch.layer_norm(x, weight, bias, float(eps), activation, residual, out=_out)
    return layer_norm_op(x, weight, bias, float(eps), activation, residual)


IMPLS = {
    "masked_moments": masked_moments,
    "region_adain": region_adain,
    "highway_adain": highway_adain,
    "instance_norm": instance_norm,
    "layer_norm": layer_norm,
}
