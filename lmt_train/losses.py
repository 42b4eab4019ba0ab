"""The LOMIT objective as the official code computes it (reference/lomit.md §4).

Notation: x_A are the inputs, x_B the exemplars (both from the same loader), y_A / y_B their multi-hot
labels. Every objective returns a `LossResult`: the weighted total (what is back-propagated) and each
term unweighted under its own name, so the trainer can log every one of them.

Generator (two stages, §4.1):
    stage 1   c = E_c(x); m_A = Mask(c_A, c_B), m_B = Mask(c_B, c_A); foreground / background styles of
              x ⊙ m and x ⊙ (1 - m); x_AB = G(c_A, m_A, s_fB, s_bA), x_BA = G(c_B, m_B, s_fA, s_bB)
    stage 2   re-encode x_AB, x_BA (content, masks Mask(c_AB, c_BA) / Mask(c_BA, c_AB), styles);
              cross cycle x_ABA = G(c_AB, m_AB, s_fBA, s_bAB), x_BAB = G(c_BA, m_BA, s_fAB, s_bBA);
              self-reconstruction x_AA = G(c_A, m_AA, s_fA, s_bA) with m_AA = Mask(c_A, c_A) but the styles
              extracted with m_A (likewise x_BB).
Discriminator (§4.4): WGAN-GP on both directions (real x_A / fake x_AB, real x_B / fake x_BA) plus the
attribute BCE of the real images.

Batching: the style encoder, the decoder (LayerNorm) and the discriminator have no statistics across the
batch, so their calls for several images are concatenated into one. The mask network (BatchNorm) and, in
compat="official", the content encoder (running instance-norm statistics) run once per image set, as in
the official code, so their batch statistics are those of the official code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmt_train.config import LossWeights

# Generator terms in the order they are logged; each is multiplied by the LossWeights field of its name
# (the adversarial term has weight 1).
GENERATOR_TERMS = ("adv", "cls", "x_rec", "x_cyc", "c", "s_f", "s_b", "mask_min", "mask_sim", "mask_smooth",
                   "style_reg")
DISCRIMINATOR_TERMS = ("real", "fake", "cls", "gp")


@dataclass
class LossResult:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]           # unweighted, detached; "total" included
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # for sample grids (detached)


# -- single terms ----------------------------------------------------------------------------------

def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (the official recon_criterion)."""
    return (a.float() - b.float()).abs().mean()


def attribute_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with logits summed over attributes and averaged over the batch (the official form)."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, target.to(logits), reduction="sum") / logits.shape[0]


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor,
                     grad_scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: mean over samples of (‖∇_x̂ Σ critic(x̂)‖₂ − 1)², x̂ = α·real + (1 − α)·fake.

    alpha has one value per sample, shape (N, 1, 1, 1). With a GradScaler (fp16), pass its current scale:
    the gradient is taken of the scaled sum and unscaled before the norm, so small gradients survive fp16.
    """
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    return penalty_from_scores(critic(x_hat), x_hat, grad_scale)


def penalty_from_scores(scores: torch.Tensor, x_hat: torch.Tensor,
                        grad_scale: float | torch.Tensor | None = None) -> torch.Tensor:
    """The gradient penalty given the critic's scores of x_hat (x_hat must require grad)."""
    outputs = scores.float().sum()
    if grad_scale is not None:
        outputs = outputs * grad_scale
    (grad,) = torch.autograd.grad(outputs, x_hat, create_graph=True)
    grad = grad.float()
    if grad_scale is not None:
        grad = grad / grad_scale
    norm = grad.flatten(1).norm(dim=1)
    return ((norm - 1) ** 2).mean()


def mask_min(masks: list[torch.Tensor]) -> torch.Tensor:
    """R2, "mask min": the sum over masks of each mask's mean (pushes masks to be small)."""
    return sum(m.float().mean() for m in masks)


def mask_similarity(masks: list[torch.Tensor], content: torch.Tensor) -> torch.Tensor:
    """R1: Σ over masks of mean_{b,i,j}( S_bij · |m_bi − m_bj| ), S the cosine similarity of content positions.

    S comes from the detached content code (L2-normalised over channels, eps 1e-8), so gradients flow only
    through the masks (and from there into the mask network and the content encoder, as in the official
    code). Cosines can be negative: there, differences between mask values are rewarded.
    """
    c = F.normalize(content.detach().float().flatten(2), dim=1, eps=1e-8)  # (N, C, HW)
    similarity = c.transpose(1, 2) @ c                                       # (N, HW, HW)
    total = content.new_zeros((), dtype=torch.float32)
    for m in masks:
        flat = m.float().flatten(1)                                          # (N, HW)
        if flat.shape[1] != similarity.shape[1]:
            raise ValueError(f"mask of {flat.shape[1]} positions does not match a content code of "
                             f"{similarity.shape[1]} positions")
        total = total + (similarity * (flat[:, :, None] - flat[:, None, :]).abs()).mean()
    return total


def total_variation(masks: list[torch.Tensor]) -> torch.Tensor:
    """Mask smoothness: Σ|Δx m| + Σ|Δy m| summed (not averaged) over every mask."""
    total = 0
    for m in masks:
        m = m.float()
        total = total + (m[..., 1:, :] - m[..., :-1, :]).abs().sum() + (m[..., :, 1:] - m[..., :, :-1]).abs().sum()
    return total


def style_regulariser(s_f_a: torch.Tensor, s_f_b: torch.Tensor) -> torch.Tensor:
    """−‖s_fA − s_fB‖₁ (mean): pushes the two foreground styles apart."""
    return -l1(s_f_a, s_f_b)


def weighted_total(terms: dict[str, torch.Tensor], weights: LossWeights, unit_weight: tuple[str, ...]) -> torch.Tensor:
    """Σ λ_name · term; the names in unit_weight have weight 1."""
    return sum(term * (1.0 if name in unit_weight else getattr(weights, name)) for name, term in terms.items())


# -- generator passes ------------------------------------------------------------------------------

@dataclass
class Stage:
    """One image pair through the generator: contents, masks, styles and the two translations."""

    c_a: torch.Tensor
    c_b: torch.Tensor
    m_a: torch.Tensor
    m_b: torch.Tensor
    s_f_a: torch.Tensor
    s_b_a: torch.Tensor
    s_f_b: torch.Tensor
    s_b_b: torch.Tensor
    x_ab: torch.Tensor
    x_ba: torch.Tensor


def encode_contents(generator, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E_c of both image sets: one batched call where instance statistics allow it."""
    if generator.config.compat == "official":  # running IN statistics: one update per set, as officially
        return generator.encode_content(x_a), generator.encode_content(x_b)
    return generator.encode_content(torch.cat([x_a, x_b])).chunk(2)


def encode_styles(generator, x_a, m_a, x_b, m_b) -> tuple[torch.Tensor, ...]:
    """(s_fA, s_bA, s_fB, s_bB) in one style-encoder call; the background of m is the foreground of 1 − m."""
    images = torch.cat([x_a, x_a, x_b, x_b])
    masks = torch.cat([m_a, 1 - m_a, m_b, 1 - m_b])
    return generator.encode_style(images, masks, "foreground").chunk(4)


def translate_pair(generator, x_a: torch.Tensor, x_b: torch.Tensor) -> Stage:
    """Stage 1: each image translated with the other one's foreground style."""
    c_a, c_b = encode_contents(generator, x_a, x_b)
    m_a = generator.compute_mask(c_a, c_b)
    m_b = generator.compute_mask(c_b, c_a)
    s_f_a, s_b_a, s_f_b, s_b_b = encode_styles(generator, x_a, m_a, x_b, m_b)
    x_ab, x_ba = generator.decode(torch.cat([c_a, c_b]), torch.cat([m_a, m_b]),
                                  torch.cat([s_f_b, s_f_a]), torch.cat([s_b_a, s_b_b])).chunk(2)
    return Stage(c_a, c_b, m_a, m_b, s_f_a, s_b_a, s_f_b, s_b_b, x_ab, x_ba)


def generator_objective(generator, discriminator, x_a, x_b, y_a, y_b, weights: LossWeights) -> LossResult:
    """The whole generator loss of one G step (reference/lomit.md §4.1-4.3)."""
    one = translate_pair(generator, x_a, x_b)
    # Stage 2: the translations re-encoded; their "A" is x_AB and their "B" is x_BA.
    two = _reencode(generator, one.x_ab, one.x_ba)
    m_aa = generator.compute_mask(one.c_a, one.c_a)
    m_bb = generator.compute_mask(one.c_b, one.c_b)
    # Cross cycle (x_ABA, x_BAB) and self-reconstruction (x_AA, x_BB) in one decoder call.
    x_aba, x_bab, x_aa, x_bb = generator.decode(
        torch.cat([two.c_a, two.c_b, one.c_a, one.c_b]),
        torch.cat([two.m_a, two.m_b, m_aa, m_bb]),
        torch.cat([two.s_f_b, two.s_f_a, one.s_f_a, one.s_f_b]),
        torch.cat([two.s_b_a, two.s_b_b, one.s_b_a, one.s_b_b]),
    ).chunk(4)

    scores, logits = discriminator(torch.cat([one.x_ab, one.x_ba]))
    masks_a, masks_b = [one.m_a, two.m_a, m_aa], [one.m_b, two.m_b, m_bb]
    terms = {
        "adv": -per_direction_mean(scores),
        "cls": attribute_bce(logits, torch.cat([y_b, y_a])),  # each translation takes its exemplar's labels
        "x_rec": l1(x_aa, x_a) + l1(x_bb, x_b),
        "x_cyc": l1(x_aba, x_a) + l1(x_bab, x_b),
        "c": l1(two.c_a, one.c_a) + l1(two.c_b, one.c_b),
        "s_f": l1(two.s_f_a, one.s_f_b) + l1(two.s_f_b, one.s_f_a),
        "s_b": l1(two.s_b_a, one.s_b_a) + l1(two.s_b_b, one.s_b_b),
        "mask_min": mask_min(masks_a + masks_b),
        "mask_sim": mask_similarity(masks_a, one.c_a) + mask_similarity(masks_b, one.c_b),
        "mask_smooth": total_variation(masks_a + masks_b),
        "style_reg": style_regulariser(one.s_f_a, one.s_f_b),
    }
    total = weighted_total(terms, weights, unit_weight=("adv",))
    images = {"input": x_a, "exemplar": x_b, "translation": one.x_ab, "input_mask": one.m_a,
              "exemplar_mask": one.m_b}
    return LossResult(total, _detached(terms, total), {k: v.detach() for k, v in images.items()})


def _reencode(generator, x_ab: torch.Tensor, x_ba: torch.Tensor) -> Stage:
    """Contents, masks and styles of the translations (x_AB plays A, x_BA plays B); no decoding."""
    c_ab, c_ba = encode_contents(generator, x_ab, x_ba)
    m_ab = generator.compute_mask(c_ab, c_ba)
    m_ba = generator.compute_mask(c_ba, c_ab)
    s_f_ab, s_b_ab, s_f_ba, s_b_ba = encode_styles(generator, x_ab, m_ab, x_ba, m_ba)
    return Stage(c_ab, c_ba, m_ab, m_ba, s_f_ab, s_b_ab, s_f_ba, s_b_ba, x_ab, x_ba)


# -- discriminator ---------------------------------------------------------------------------------

def discriminator_objective(discriminator, x_real, x_fake, y_real, alpha, weights: LossWeights,
                            grad_scale=None, directions: int = 2) -> LossResult:
    """L_D summed over the translation directions stacked along the batch (§4.4).

    x_real / x_fake / y_real hold the directions one after the other ([x_A; x_B], [x_AB; x_BA]); each
    direction contributes −mean D(real) + mean D(fake) + λ_cls·BCE(real) + λ_gp·GP. The critic runs once,
    on real, fake and the interpolates together (it has no batch statistics).
    """
    n = x_real.shape[0]
    x_fake = x_fake.detach()
    x_hat = (alpha * x_real.detach() + (1 - alpha) * x_fake).requires_grad_(True)
    scores, logits = discriminator(torch.cat([x_real, x_fake, x_hat]))
    real, fake, interpolated = scores.split(n)
    # Every direction has the same batch size, so a sum over directions of per-direction means is
    # `directions` times the mean over all samples.
    terms = {
        "real": -per_direction_mean(real, directions),
        "fake": per_direction_mean(fake, directions),
        "cls": attribute_bce(logits[:n], y_real) * directions,    # Σ over directions of BCE_sum / B
        "gp": penalty_from_scores(interpolated, x_hat, grad_scale) * directions,
    }
    total = weighted_total(terms, weights, unit_weight=("real", "fake"))
    return LossResult(total, _detached(terms, total))


def per_direction_mean(t: torch.Tensor, directions: int = 2) -> torch.Tensor:
    """Σ over the directions stacked along the batch of each direction's mean."""
    return t.float().reshape(directions, -1).mean(dim=1).sum()


def _detached(terms: dict[str, torch.Tensor], total: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {name: torch.as_tensor(value).detach().float() for name, value in terms.items()}
    out["total"] = total.detach().float()
    return out


# -- modules for DistributedDataParallel -----------------------------------------------------------

class GeneratorObjective(nn.Module):
    """The G step as one module call, so DistributedDataParallel can wrap it and sync G's gradients.

    The discriminator is held outside the module tree: DDP then sees (and syncs) only the generator's
    parameters; D is frozen during the G step anyway.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, weights: LossWeights):
        super().__init__()
        self.generator = generator
        self._critic = (discriminator,)
        self.weights = weights

    def forward(self, x_a, x_b, y_a, y_b) -> LossResult:
        return generator_objective(self.generator, self._critic[0], x_a, x_b, y_a, y_b, self.weights)


class DiscriminatorObjective(nn.Module):
    """The D step (real/fake scores, attribute BCE, gradient penalty) as one call of the critic."""

    def __init__(self, discriminator: nn.Module, weights: LossWeights):
        super().__init__()
        self.discriminator = discriminator
        self.weights = weights

    def forward(self, x_real, x_fake, y_real, alpha, grad_scale=None) -> LossResult:
        return discriminator_objective(self.discriminator, x_real, x_fake, y_real, alpha, self.weights,
                                       grad_scale)
