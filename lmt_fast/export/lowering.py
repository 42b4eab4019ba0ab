"""How the op family becomes ONNX: an op backend used only while exporting.

The models call ``lmt_fast.ops.*(..., backend=layer.backend)``; exporting sets every layer's backend
to "onnx_export", registered here for the duration of the export. Its implementations have the
semantics of ``lmt_fast.ops.reference`` but are written in the forms ONNX runtimes know best:

* instance_norm  -> ``F.instance_norm`` -> ONNX ``InstanceNormalization`` (same formula: biased
  variance, eps inside the sqrt). TensorRT >= 10 imports it as its native INormalizationLayer, which
  it recognises and keeps accurate in fp16 graphs; a hand-written ReduceMean/Sub/Pow/Sqrt chain would be
  left to TensorRT's generic fusions (the risky case in fp16).
* layer_norm     -> ``F.group_norm(x, 1)`` -> InstanceNormalization on a (N, 1, C*H*W) view + affine,
  the same native layer (ONNX LayerNormalization cannot take a per-channel affine over (C, H, W)).
* highway_adain / region_adain (stats="global") -> InstanceNormalization without affine (the plain
  spatial moments of x), then the mask-weighted mix of the two styles as Mul/Add.
* region_adain (stats="region"), masked_moments -> Mul / ReduceSum / Div / Sqrt (masked statistics
  have no ONNX operator).

Every statistic is computed in float32: inputs are cast up before, and the result cast back after,
exactly where ``reference`` does it, so a float16 graph carries explicit float32 islands (what
TensorRT 11's strongly typed builder needs to keep them in float32).

With ``custom_ops=True`` highway_adain / region_adain instead emit one ``lmt::RegionAdaIN`` node each,
served by the TensorRT plugin (csrc/trt); see ``REGION_ADAIN_NODE``.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from lmt_fast.ops import reference
from lmt_fast.ops.dispatch import register_backend, unregister_backend

BACKEND = "onnx_export"

# The custom node (and TensorRT plugin) interface. TensorRT's ONNX parser imports an unknown op as the
# plugin named by its op type, with version / namespace from these attributes.
REGION_ADAIN_NODE = {
    "domain": "lmt",
    "op_type": "RegionAdaIN",
    "version": 1,
    "plugin_namespace": "lmt",
    "plugin_version": "1",
    # inputs: x (N, C, H, W) graph dtype; masks (N, K, H, W) float32, already at x's size;
    #         gamma, beta (N, K, C) float32; [residual (N, C, H, W) graph dtype]
    # attributes: eps (float), activation ("none" | "relu" | "lrelu"), stats ("global" | "region")
    # output: y, x's shape and dtype; statistics accumulate in float32 inside the plugin
}

_F32 = torch.float32


def _epilogue(y: torch.Tensor, x: torch.Tensor, activation, residual) -> torch.Tensor:
    y = reference._activate(y, activation)
    if residual is not None:
        y = y + residual.to(_F32)
    return y.to(x.dtype)


def _f32(t):
    return None if t is None else t.to(_F32)


def instance_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    y = F.instance_norm(x.to(_F32), weight=_f32(weight), bias=_f32(bias), eps=eps)
    return _epilogue(y, x, activation, residual)


def layer_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None):
    y = F.group_norm(x.to(_F32), 1, weight=_f32(weight), bias=_f32(bias), eps=eps)
    return _epilogue(y, x, activation, residual)


def _masks_at(masks, x):
    return reference.resize_masks(masks, x.shape[-2:], _F32)


def _masked_moments(xa, m, eps):
    """(N, K, C) mean and variance; broadcasting instead of einsum, which TensorRT only partly supports."""
    mm, xx = m[:, :, None], xa[:, None]                      # (N, K, 1, H, W), (N, 1, C, H, W)
    denom = m.sum(dim=(2, 3))[:, :, None] + eps              # (N, K, 1)
    mean = (mm * xx).sum(dim=(3, 4)) / denom
    var = (mm * (xx - mean[..., None, None]) ** 2).sum(dim=(3, 4)) / denom
    return mean, var


def masked_moments(x, masks, eps=1e-5):
    return _masked_moments(x.to(_F32), _masks_at(masks, x), eps)


def region_adain(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None):
    m = _masks_at(masks, x)
    xa = x.to(_F32)
    gamma, beta = gamma.to(_F32)[..., None, None], beta.to(_F32)[..., None, None]  # (N, K, C, 1, 1)
    if stats == "global":
        x_hat = F.instance_norm(xa, eps=eps)[:, None]        # (N, 1, C, H, W)
    else:
        mean, var = _masked_moments(xa, m, eps)
        x_hat = (xa[:, None] - mean[..., None, None]) / torch.sqrt(var[..., None, None] + eps)
    y = (m[:, :, None] * (gamma * x_hat + beta)).sum(dim=1)
    return _epilogue(y, x, activation, residual)


def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5):
    m = mask.to(_F32)
    masks = torch.cat([m, 1 - m], dim=1)
    gamma = torch.stack([gamma_f.to(_F32), gamma_b.to(_F32)], dim=1)
    beta = torch.stack([beta_f.to(_F32), beta_b.to(_F32)], dim=1)
    # Two terms instead of region_adain's K-way sum: the same arithmetic as the reference.
    xa = x.to(_F32)
    x_hat = F.instance_norm(xa, eps=eps)
    m = _masks_at(masks, x)
    y = m[:, :1] * (gamma[:, 0, :, None, None] * x_hat + beta[:, 0, :, None, None]) \
        + m[:, 1:] * (gamma[:, 1, :, None, None] * x_hat + beta[:, 1, :, None, None])
    return y.to(x.dtype)


# -- the custom-node forms (custom_ops=True); outside an export they compute like the standard forms --

def region_adain_node(x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None):
    if not torch.onnx.is_in_onnx_export():
        return region_adain(x, masks, gamma, beta, stats, eps, activation, residual)
    return _node(x, _masks_at(masks, x), gamma.to(_F32), beta.to(_F32), stats, eps, activation, residual)


def highway_adain_node(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5):
    if not torch.onnx.is_in_onnx_export():
        return highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)
    m = mask.to(_F32)
    gamma = torch.stack([gamma_f.to(_F32), gamma_b.to(_F32)], dim=1)
    beta = torch.stack([beta_f.to(_F32), beta_b.to(_F32)], dim=1)
    return _node(x, _masks_at(torch.cat([m, 1 - m], dim=1), x), gamma, beta, "global", eps, None, None)


def _node(x, masks, gamma, beta, stats, eps, activation, residual):
    spec = REGION_ADAIN_NODE
    inputs = (x, masks, gamma, beta) + (() if residual is None else (residual.to(x.dtype),))
    attrs = {"eps": float(eps), "activation": activation or "none", "stats": stats,
             "plugin_namespace": spec["plugin_namespace"], "plugin_version": spec["plugin_version"]}
    return torch.onnx.ops.symbolic(f"{spec['domain']}::{spec['op_type']}", inputs, attrs, dtype=x.dtype,
                                   shape=x.shape, version=spec["version"])


IMPLS = {"masked_moments": masked_moments, "region_adain": region_adain, "highway_adain": highway_adain,
         "instance_norm": instance_norm, "layer_norm": layer_norm}
CUSTOM_IMPLS = {**IMPLS, "region_adain": region_adain_node, "highway_adain": highway_adain_node}


@contextlib.contextmanager
def export_backend(custom_ops: bool = False):
    """Register the "onnx_export" op backend (lowest priority: "auto" never picks it) while exporting."""
    table = CUSTOM_IMPLS if custom_ops else IMPLS
    register_backend(BACKEND, table, devices=None, priority=-1000, differentiable=True, replace=True)
    try:
        yield BACKEND
    finally:
        unregister_backend(BACKEND)


@contextlib.contextmanager
def official_hadain_in_float32(enabled: bool = True):
    """Run compat="official" HAdaIN's statistics in float32 while exporting a float16 graph.

    That HAdaIN is plain torch inside lmt_fast.models.lomit (not an op of the family), so it computes in
    its input's dtype; in a float16 graph its std-of-row-stds would be float16. It is swapped for the
    same function on float32 copies for the duration of the export.
    """
    from lmt_fast.models import lomit

    original = lomit.official_highway_adain
    if not enabled:
        yield
        return

    def float32_statistics(c, m, gamma_f, beta_f, gamma_b, beta_b, eps: float = 1e-5):
        y = original(c.to(_F32), m.to(_F32), gamma_f.to(_F32), beta_f.to(_F32), gamma_b.to(_F32),
                     beta_b.to(_F32), eps)
        return y.to(c.dtype)

    lomit.official_highway_adain = float32_statistics
    try:
        yield
    finally:
        lomit.official_highway_adain = original
