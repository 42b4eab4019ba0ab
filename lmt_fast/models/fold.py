"""Inference-time folding of normalisations with fixed statistics into the preceding convolution.

In eval mode a BatchNorm (the mask network) or a running-statistics instance norm (compat="official")
is a per-channel affine map, so conv -> norm equals one conv with rescaled weights and a shifted bias:
    w' = w * s,  b' = (b - running_mean) * s + beta,  s = gamma / sqrt(running_var + eps)
This removes a full read and write of the activation per folded layer.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lmt_fast.models.layers import ConvNormAct, Norm

FOLDABLE = ("bn", "in_running")


def fold_conv_norm(block: ConvNormAct) -> bool:
    """Fold block.norm into block.conv in place if its statistics are fixed; returns whether it did."""
    norm = block.norm
    if norm.kind not in FOLDABLE:
        return False
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        conv = block.conv
        conv.weight.mul_(scale.to(conv.weight.dtype)[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        new_bias = (bias - norm.running_mean) * scale + norm.bias
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)
    block.norm = Norm("none", conv.out_channels)
    return True


def fold_norms(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of `model` (eval mode) with every fixed-statistics norm folded into its conv.

    Only for inference: the folded model has no running statistics left to update.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvNormAct):
            fold_conv_norm(module)
    return model
