"""The loss network Φ of MGST training and the region statistics built on it.

No pretrained ImageNet network can be downloaded here, so Φ is a **fixed random conv net**: three 3x3
conv + ReLU layers (widths w, 2w, 4w at full, 1/2 and 1/4 resolution) with Kaiming-normal weights and
small random biases drawn from a fixed seed, plus the raw pixels as "layer 0". Why random rather than a
network trained here on the synthetic eyes:

* shallow random conv features carry texture and colour statistics well enough for style losses
  (Ustyuzhaninov et al., "Texture synthesis using shallow convolutional networks with random filters",
  2016; He et al., "A powerful generative model using random weights", 2016);
* they are neutral between the two domains: a net trained on synthetic eyes only has features tuned to
  clean images whose response to noise, glints and lashes is arbitrary;
* they stay independent of the pupil regressor, which already supervises the task term (a Φ taken from
  the regressor would count the task twice);
* they cost nothing to train and are rebuilt from (seed, width), so checkpoints need not store them.

The evaluation (lmt_train.mgst.evaluate) uses another random Φ (another seed), so the benchmark's style
distance is not the quantity the training minimised.

Region statistics go through the engine's own ``lmt_fast.ops.masked_moments`` (mean and variance per
region, K = 2: attention and background).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast import ops


class RandomFeatures(nn.Module):
    """Φ: pixels plus three fixed random conv layers; forward returns the list [x, f1, f2, f3]."""

    def __init__(self, seed: int = 1234, width: int = 16):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        dims = [3, width, 2 * width, 4 * width]
        self.strides = [1, 2, 2]
        self.convs = nn.ModuleList()
        for cin, cout in zip(dims[:-1], dims[1:]):
            conv = nn.Conv2d(cin, cout, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (cin * 9)) ** 0.5)
                conv.bias.copy_(torch.randn(cout, generator=gen) * 0.1)
            self.convs.append(conv)
        self.requires_grad_(False)
        self.seed, self.width = int(seed), int(width)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for conv, stride in zip(self.convs, self.strides):
            x = F.relu(F.conv2d(x, conv.weight, conv.bias, stride=stride, padding=1))
            feats.append(x)
        return feats

    def train(self, mode: bool = True) -> "RandomFeatures":  # always fixed
        return super().train(False)


def region_masks(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) attention mask -> (N, 2, H, W) [attention, background]."""
    return torch.cat([mask, 1 - mask], dim=1)


def pooled(masks: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """Masks area-pooled to a feature map's size."""
    if tuple(masks.shape[-2:]) == tuple(feature.shape[-2:]):
        return masks
    return F.adaptive_avg_pool2d(masks, feature.shape[-2:])


def region_moments(feats: list[torch.Tensor], masks: torch.Tensor, eps: float = 1e-5,
                   backend: str = "auto") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (mean, std) of each region, each (N, K, C)."""
    out = []
    for f in feats:
        mean, var = ops.masked_moments(f, pooled(masks, f), eps=eps, backend=backend)
        out.append((mean, torch.sqrt(var + eps)))
    return out


def style_distance(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]
                   ) -> torch.Tensor:
    """Per image and region: Σ_layers mean_c [(μ_a − μ_b)² + (σ_a − σ_b)²], shape (N, K)."""
    total = 0
    for (mean_a, std_a), (mean_b, std_b) in zip(a, b):
        total = total + ((mean_a - mean_b) ** 2 + (std_a - std_b) ** 2).mean(dim=-1)
    return total


def content_distance(feats_a: list[torch.Tensor], feats_b: list[torch.Tensor], mask: torch.Tensor | None,
                     layers=(2, 3)) -> torch.Tensor:
    """Σ over `layers` of the mean squared feature difference, weighted by `mask` (None: everywhere),
    normalised by the mask's area: Σ_p m(p) Σ_c (Φ_c(a) − Φ_c(b))² / (C Σ_p m(p))."""
    total = 0
    for layer in layers:
        diff = (feats_a[layer] - feats_b[layer]) ** 2
        if mask is None:
            total = total + diff.mean()
        else:
            m = pooled(mask, diff)
            total = total + (diff * m).sum() / (diff.shape[1] * m.sum() + 1e-6)
    return total
