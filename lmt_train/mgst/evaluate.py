"""Evaluation of purifiers on held-out procedural eyes (ground truth known for every pixel).

For each method -- "synthetic (reference)" (the clean rendering of the same eyes: the floor), "raw real"
(no purification) and every given purifier (applied to the real rendering with its stored style) -- on
`count` test eyes (split "test", never seen in training):

* pupil-centre error (pixels; mean with its standard error, median, 90th percentile) of every given
  regressor. The task
  regressor is the one MGST's task-guided loss used; an *independent* regressor (another seed and width,
  trained the same way on synthetic eyes only) is the fair measure, since the purifiers were optimised
  against the first one;
* region-wise style distance to the synthetic domain, per region (attention = iris + pupil, background):
  - Fréchet distance between Gaussian fits of the per-image region moments (mean and std of pixels and of
    an evaluation random conv net Φ_eval, seed 999, not the training Φ) of the method's images and of an
    independent synthetic reference set (split "val");
  - paired moment distance: the same moments against those of each eye's own clean rendering;
* geometry preservation: IoU of the pupil predicted by a segmenter trained on synthetic eyes against the
  true pupil mask (the geometry before purification);
* L1 distance to the paired clean rendering (images in [0, 1]), whole image and attention region;
* paired differences of the pupil error between methods on the same eyes (mean, standard error, share of
  eyes where the first method is better).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lmt_train.data.eyes import SyntheticEyes
from lmt_train.mgst.features import RandomFeatures, region_masks, region_moments, style_distance
from lmt_train.mgst.regressor import pixel_error

EVAL_FEATURE_SEED = 999
REGIONS = ("attention", "background")


@dataclass
class EvalSet:
    real: torch.Tensor
    synthetic: torch.Tensor
    mask: torch.Tensor
    pupil_mask: torch.Tensor
    centre: torch.Tensor
    reference: torch.Tensor          # independent synthetic images (split "val")
    reference_mask: torch.Tensor


def eval_set(count: int = 500, seed: int = 0, size=(36, 60)) -> EvalSet:
    test = SyntheticEyes(count, seed=seed, split="test", size=size, rendering="both", cache=False)
    items = [test[i] for i in range(count)]
    ref = SyntheticEyes(count, seed=seed, split="val", size=size, rendering="synthetic", cache=False)
    ref_items = [ref[i] for i in range(count)]

    def stack(rows, key):
        return torch.stack([r[key] for r in rows])

    return EvalSet(stack(items, "real"), stack(items, "synthetic"), stack(items, "mask"), stack(items, "pupil_mask"),
                   stack(items, "pupil_centre"), stack(ref_items, "image"), stack(ref_items, "mask"))


def _moment_vectors(images: torch.Tensor, masks: torch.Tensor, features: RandomFeatures) -> torch.Tensor:
    """(N, K, D): per image and region, the concatenated means and stds of every Φ_eval layer."""
    moments = region_moments(features(images), region_masks(masks), backend="reference")
    return torch.cat([torch.cat([mean, std], dim=-1) for mean, std in moments], dim=-1).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two sample sets (N, D): ‖μa − μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * middle)


def _iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


@torch.no_grad()
def evaluate(purifiers: dict, regressors: dict, segmenter=None, count: int = 500, seed: int = 0,
             size=(36, 60), batch_size: int = 100) -> dict:
    """Metrics of every method (see the module docstring); purifiers: {name: MGSTGenerator}."""
    data = eval_set(count, seed, size)
    phi = RandomFeatures(EVAL_FEATURE_SEED, 16)
    ref_vectors = _moment_vectors(data.reference, data.reference_mask, phi)
    clean_moments = region_moments(phi(data.synthetic), region_masks(data.mask), backend="reference")
    outputs = {"synthetic (reference)": data.synthetic, "raw real": data.real}
    for name, generator in purifiers.items():
        generator.eval()
        chunks = [generator(data.real[i:i + batch_size], data.mask[i:i + batch_size])
                  for i in range(0, count, batch_size)]
        outputs[name] = torch.cat(chunks).float().clamp(-1, 1)
    results = {}
    per_image: dict[tuple[str, str], np.ndarray] = {}
    for name, images in outputs.items():
        row: dict[str, float] = {}
        for reg_name, regressor in regressors.items():
            pred = torch.cat([regressor(images[i:i + batch_size]) for i in range(0, count, batch_size)])
            err = pixel_error(pred, data.centre, size).numpy()
            per_image[(name, reg_name)] = err
            row[f"{reg_name}_error_px_mean"] = round(float(err.mean()), 4)
            row[f"{reg_name}_error_px_sem"] = round(float(err.std(ddof=1) / np.sqrt(len(err))), 4)
            row[f"{reg_name}_error_px_median"] = round(float(np.median(err)), 4)
            row[f"{reg_name}_error_px_p90"] = round(float(np.percentile(err, 90)), 4)
        vectors = _moment_vectors(images, data.mask, phi)
        paired = style_distance(region_moments(phi(images), region_masks(data.mask), backend="reference"),
                                clean_moments)
        for k, region in enumerate(REGIONS):
            row[f"style_fd_{region}"] = round(frechet_distance(vectors[:, k], ref_vectors[:, k]), 4)
            row[f"style_paired_{region}"] = round(float(paired[:, k].mean()), 5)
        if segmenter is not None:
            pred = torch.cat([segmenter(images[i:i + batch_size]) for i in range(0, count, batch_size)]) > 0
            row["pupil_iou"] = round(float(_iou(pred, data.pupil_mask > 0.5).mean()), 4)
        diff = ((images - data.synthetic).abs() / 2).mean(dim=1, keepdim=True)
        row["l1_to_clean"] = round(float(diff.mean()), 5)
        row["l1_to_clean_attention"] = round(float((diff * data.mask).sum() / data.mask.sum()), 5)
        results[name] = row
    # paired differences of the pupil error between methods on the same eyes (negative: first one better)
    names = list(outputs)[1:]
    paired = {}
    for reg_name in regressors:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                diff = per_image[(a, reg_name)] - per_image[(b, reg_name)]
                paired[f"{a} - {b} ({reg_name})"] = {
                    "mean_px": round(float(diff.mean()), 4),
                    "sem_px": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                    "first_better_share": round(float((diff < 0).mean()), 4)}
    return {"count": count, "seed": seed, "size": list(size), "eval_feature_seed": EVAL_FEATURE_SEED,
            "methods": results, "paired_error_differences": paired}


def markdown_table(result: dict, regressor_names=("independent", "task")) -> str:
    """A Markdown table of the main metrics."""
    cols = [(f"{r}_error_px_mean", f"pupil err, {r} regressor (px, mean)") for r in regressor_names]
    cols += [(f"{r}_error_px_median", f"{r} (median)") for r in regressor_names[:1]]
    cols += [("style_fd_attention", "style FD attention"), ("style_fd_background", "style FD background"),
             ("style_paired_attention", "paired style dist. att."), ("style_paired_background", "paired bkgd"),
             ("pupil_iou", "pupil IoU"), ("l1_to_clean", "L1 to clean")]
    methods = result["methods"]
    present = [(k, title) for k, title in cols if any(k in row for row in methods.values())]
    lines = ["| method | " + " | ".join(t for _, t in present) + " |",
             "|---|" + "---|" * len(present)]
    for name, row in methods.items():
        cells = []
        for key, _ in present:
            v = row.get(key)
            sem = row.get(key.replace("_mean", "_sem")) if key.endswith("_error_px_mean") else None
            if sem is not None and v is not None:
                cells.append(f"{v:.3f} ± {sem:.3f}")
                continue
            cells.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
