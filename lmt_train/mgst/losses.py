"""The MGST training objective (a reconstruction: reference/mgst.md §3.3; no term or weight is the paper's).

Notation: x real image (N, 3, H, W) with attention mask m (iris + pupil) and pupil-centre label c (pixels);
x_s an unpaired synthetic image with its mask m_s (the style target and the discriminator's "real");
y = G(x, m, s) the purified image, s either the style of x_s or the stored domain style; Φ the fixed random
loss network (features.py: pixels + 3 conv layers); R the frozen pupil regressor (regressor.py).

Generator terms (each logged unweighted; the total is Σ λ · term):

    content_full  Σ_{l∈{2,3}} mean (Φ_l(y) − Φ_l(x))²                         content of the full image
    content_att   the same weighted by m (area-pooled), normalised by Σm      content of the attention region
    style_att     Σ_{l∈{0..3}} mean_c [(μ_att,l(y) − μ_att,l(x_s))² + (σ_att,l(y) − σ_att,l(x_s))²]
    style_bkgd    the same for the background region (1 − m on y, 1 − m_s on x_s)
                  μ, σ: lmt_fast.ops.masked_moments of Φ_l under the region masks (area-pooled)
    adv           LSGAN: mean (D(y) − 1)²                                    toward the synthetic domain
    task          mean over labelled images of ‖R(y) − c‖² in pixels²        the task-guided term
    tv            mean |y(i, j+1) − y(i, j)| + mean |y(i+1, j) − y(i, j)|    smoothness (synthetic eyes are flat)

The discriminator minimises ½·[mean (D(x_s) − 1)² + mean D(y)²].

With ``region_losses = False`` the content_att / style terms see an all-ones mask (one region: the whole
image, so style_bkgd is 0). The global baseline is trained with region_losses = True like MGST: only its
generator is blind to the regions, so the comparison isolates the region-wise renormalisation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lmt_train.data.eyes import denormalise_centre
from lmt_train.mgst.config import MGSTLossWeights
from lmt_train.mgst.features import content_distance, region_masks, region_moments, style_distance

GENERATOR_TERMS = ("content_full", "content_att", "style_att", "style_bkgd", "adv", "task", "tv")
DISCRIMINATOR_TERMS = ("real", "fake")


@dataclass
class Batch:
    real: torch.Tensor           # (N, 3, H, W) in [-1, 1]
    mask: torch.Tensor           # (N, 1, H, W) attention
    centre: torch.Tensor         # (N, 2) pixels (NaN where unlabelled)
    style: torch.Tensor          # (N, 3, H, W) synthetic, unpaired
    style_mask: torch.Tensor     # (N, 1, H, W)


@dataclass
class LossResult:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor] = field(default_factory=dict)


def task_error(regressor: nn.Module, y: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error of the regressor's pupil centre over the labelled images (0 if none)."""
    labelled = torch.isfinite(centre).all(dim=1)
    if not bool(labelled.any()):
        return y.new_zeros(())
    pred = denormalise_centre(regressor(y[labelled]).float(), y.shape[-2:])
    return ((pred - centre[labelled].float()) ** 2).sum(dim=1).mean()


def total_variation(y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally and vertically neighbouring pixels."""
    y = y.float()
    return (y[..., :, 1:] - y[..., :, :-1]).abs().mean() + (y[..., 1:, :] - y[..., :-1, :]).abs().mean()


class GeneratorObjective(nn.Module):
    def __init__(self, generator, discriminator, regressor, features, weights: MGSTLossWeights):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        self.regressor, self.features, self.weights = regressor, features, weights

    def forward(self, batch: Batch, use_stored_style: bool) -> LossResult:
        g, w = self.generator, self.weights
        n = batch.real.shape[0]
        style = g.stored_style(n) if use_stored_style else g.style_from_image(batch.style, batch.style_mask)
        y = g(batch.real, batch.mask, style)
        ones = torch.ones_like(batch.mask)
        att = batch.mask if w.region_losses else ones
        att_s = batch.style_mask if w.region_losses else ones
        phi_y = self.features(y)
        with torch.no_grad():
            phi_x = self.features(batch.real)
            phi_s = self.features(batch.style)
            target = region_moments(phi_s, region_masks(att_s))
        per_region = style_distance(region_moments(phi_y, region_masks(att)), target).mean(dim=0)
        terms = {
            "content_full": content_distance(phi_y, phi_x, None),
            "content_att": content_distance(phi_y, phi_x, att),
            "style_att": per_region[0],
            "style_bkgd": per_region[1],
            "adv": ((self.discriminator(y).float() - 1) ** 2).mean(),
            "task": task_error(self.regressor, y, batch.centre),
            "tv": total_variation(y),
        }
        total = sum(getattr(w, name) * value for name, value in terms.items())
        detached = {k: v.detach() for k, v in terms.items()}
        detached["total"] = total.detach()
        return LossResult(total, detached, {"purified": y.detach(), "style": style})


class DiscriminatorObjective(nn.Module):
    def __init__(self, discriminator):
        super().__init__()
        self.discriminator = discriminator

    def forward(self, synthetic: torch.Tensor, purified: torch.Tensor) -> LossResult:
        real = ((self.discriminator(synthetic).float() - 1) ** 2).mean()
        fake = (self.discriminator(purified.detach()).float() ** 2).mean()
        total = 0.5 * (real + fake)
        return LossResult(total, {"real": real.detach(), "fake": fake.detach(), "total": total.detach()})
