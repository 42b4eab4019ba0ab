"""Quality evaluation of LOMIT generators on held-out synthetic translation pairs.

    from lmt_train.evaluate import evaluate
    report = evaluate("runs/tiny", pairs=256)          # a checkpoint path, a Translator or a LOMITGenerator
    print(report.to_markdown())                        # report.to_dict() for JSON

Every pair of `lmt_train.data.synthetic.SyntheticPairs` (split "test" by default) comes with its exact
answer: the target is the input re-rendered with the exemplar's hair albedo, and the hair masks of both
images are known. The generator runs in the paired form (`generator(input, exemplar)`, eval mode, no
gradients) and each pair is scored on its own; the report gives mean, median, std, min and max over pairs.

Conventions (every metric is computed in float64 on images in [0, 255]; the generator's output is mapped
from [-1, 1] to [0, 255] and clamped, but not rounded to 8 bits):

    style_error           CIELAB ΔE (CIE76) between the output's and the target's mean hair colour, both
                          taken over the input's true hair region. 0 = the right colour.
    exemplar_distance     CIELAB ΔE between the output's mean hair colour (input's hair region) and the
                          exemplar's own mean hair colour (exemplar's hair region). Even the exact answer
                          scores above 0 here (shading and texture differ between the two scenes): compare
                          with the "ground truth" reference.
    background_psnr       PSNR (dB) of the output against the input over the pixels strictly outside the
                          input's hair (hair_mask == 0, which also excludes the anti-aliased edge): exactly
                          where the target equals the input bit for bit, so a perfect translation scores the
                          cap.
    input_mask_iou        IoU of the learned input mask (bilinearly upsampled to image size, > 0.5) with the
                          input's true hair mask (> 0.5). A "global" model's all-ones mask scores the hair's
                          share of the image.
    exemplar_mask_iou     the same for the exemplar's mask and the exemplar's hair.
    psnr, ssim            output vs target over the whole image. SSIM is scikit-image's
                          structural_similarity with Wang et al.'s settings (Gaussian window, sigma 1.5,
                          population covariance), per channel and averaged, data_range 255.

A "mean hair colour" is the hair_mask-weighted mean of the sRGB values over the pixels with hair_mask > 0.5
(the anti-aliased edge, which mixes hair with what lies behind it, is left out). CIELAB is computed with
the standard sRGB (IEC 61966-2-1) -> XYZ (D65) -> L*a*b* formulas in numpy (`srgb_to_lab`): Pillow's
ImageCms converts only 8-bit images, which would quantise a mean colour by up to ~1 ΔE.

PSNR of identical images is infinite; it is reported as PSNR_CAP_DB (100 dB) so that means stay finite
and JSON stays valid.

Two reference rows come with every report: "identity" (output = input: what no translation scores) and
"ground truth" (output = target: the best possible score, which matters for exemplar_distance).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "EvalReport",
    "EvaluationError",
    "METRICS",
    "MetricInfo",
    "MetricSummary",
    "MissingDependencyError",
    "ModelInfo",
    "PSNR_CAP_DB",
    "REFERENCES",
    "background_psnr",
    "comparison_markdown",
    "delta_e",
    "evaluate",
    "image_metrics",
    "mask_iou",
    "mean_hair_colour",
    "pair_metrics",
    "psnr",
    "resolve_checkpoint",
    "srgb_to_lab",
    "ssim",
    "upsample_mask",
]

PSNR_CAP_DB = 100.0
MASK_THRESHOLD = 0.5
GRID_COLUMNS = ("input", "exemplar", "output", "target", "learned mask", "true mask")


class EvaluationError(ValueError):
    """Bad input to `evaluate`; the message names the problem."""


class MissingDependencyError(ImportError):
    """An optional package the evaluation needs is not installed; the message says how to install it."""


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str
    higher_is_better: bool
    description: str


#: Every per-pair metric, in report order.
METRICS: Mapping[str, MetricInfo] = {
    "style_error": MetricInfo("hair colour error vs target", "ΔE", False,
                              "CIELAB ΔE of the output's vs the target's mean hair colour (input's hair region)"),
    "exemplar_distance": MetricInfo("hair colour distance to exemplar", "ΔE", False,
                                    "CIELAB ΔE of the output's mean hair colour vs the exemplar's"),
    "background_psnr": MetricInfo("background PSNR vs input", "dB", True,
                                  "PSNR over the pixels outside the input's hair (hair_mask == 0)"),
    "input_mask_iou": MetricInfo("input mask IoU", "", True,
                                 "learned input mask (> 0.5) vs the input's true hair (> 0.5)"),
    "exemplar_mask_iou": MetricInfo("exemplar mask IoU", "", True,
                                    "learned exemplar mask (> 0.5) vs the exemplar's true hair (> 0.5)"),
    "psnr": MetricInfo("PSNR vs target", "dB", True, "whole image, data range 255"),
    "ssim": MetricInfo("SSIM vs target", "", True, "whole image, Gaussian window sigma 1.5, data range 255"),
}
IMAGE_METRICS = ("style_error", "exemplar_distance", "background_psnr", "psnr", "ssim")
MASK_METRICS = ("input_mask_iou", "exemplar_mask_iou")

#: Reference "models" scored on the same pairs: name -> (label, which image plays the output).
REFERENCES: Mapping[str, tuple[str, str]] = {
    "identity": ("identity (output = input)", "input"),
    "ground_truth": ("ground truth (output = target)", "target"),
}


# --------------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------------

# sRGB primaries -> CIE XYZ (D65), IEC 61966-2-1.
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_LAB_DELTA = 6.0 / 29.0


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB in [0, 1] (any shape (..., 3)) -> CIE L*a*b* (D65 white), float64."""
    rgb = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _D65_WHITE
    f = np.where(xyz > _LAB_DELTA ** 3, np.cbrt(xyz), xyz / (3 * _LAB_DELTA ** 2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def delta_e(rgb_a, rgb_b) -> float:
    """CIE76 colour difference (Euclidean distance in L*a*b*) of two sRGB colours in [0, 1]."""
    return float(np.linalg.norm(srgb_to_lab(rgb_a) - srgb_to_lab(rgb_b), axis=-1))


def mean_hair_colour(image: np.ndarray, hair_mask: np.ndarray) -> np.ndarray:
    """hair_mask-weighted mean sRGB colour in [0, 1] over the pixels with hair_mask > 0.5.

    image: (H, W, 3) in [0, 255]. NaNs when no pixel is hair (such pairs drop out of the averages).
    """
    weights = np.where(hair_mask > MASK_THRESHOLD, hair_mask, 0.0).astype(np.float64)
    total = weights.sum()
    if total <= 0:
        return np.full(3, np.nan)
    return (np.asarray(image, np.float64) * weights[..., None]).sum(axis=(0, 1)) / total / 255.0


# --------------------------------------------------------------------------------------------------
# Image and mask metrics (numpy, images (H, W, 3) in [0, 255])
# --------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB (data range 255) over the pixels where `where` (H, W) is True; capped at PSNR_CAP_DB.

    NaN when `where` selects no pixel.
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if where is not None:
        diff = diff[np.asarray(where, bool)]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(10.0 * math.log10(255.0 ** 2 / mse), PSNR_CAP_DB)


def background_psnr(output: np.ndarray, input: np.ndarray, hair_mask: np.ndarray) -> float:
    """PSNR of output vs input over the pixels with hair_mask == 0 (where the target equals the input)."""
    return psnr(output, input, where=np.asarray(hair_mask) == 0)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004 settings) of two (H, W, 3) images in [0, 255]; needs scikit-image."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError:
        raise MissingDependencyError(
            "SSIM needs scikit-image, which is not installed: pip install scikit-image "
            "(or install lmt_fast with the 'train' extra)") from None
    return float(structural_similarity(
        np.asarray(a, np.float64), np.asarray(b, np.float64), channel_axis=-1, data_range=255.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False))


def mask_iou(predicted: np.ndarray, true: np.ndarray) -> float:
    """IoU of predicted > 0.5 and true > 0.5 (both (H, W)); 1.0 when both are empty (they agree)."""
    p = np.asarray(predicted) > MASK_THRESHOLD
    t = np.asarray(true) > MASK_THRESHOLD
    union = np.logical_or(p, t).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(p, t).sum() / union)


def upsample_mask(mask: torch.Tensor, size: int) -> np.ndarray:
    """(N, 1, h, w) masks at content resolution -> (N, size, size) float64 at image size (bilinear)."""
    mask = mask.detach().float()
    if tuple(mask.shape[-2:]) != (size, size):
        mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)
    return mask[:, 0].cpu().numpy().astype(np.float64)


def image_metrics(output: np.ndarray, pair) -> dict[str, float]:
    """The metrics that need only an output image (H, W, 3) in [0, 255] and its TranslationPair."""
    in_hair = pair.input.hair_mask
    target = pair.target.image.astype(np.float64)
    out_colour = mean_hair_colour(output, in_hair)
    return {
        "style_error": delta_e(out_colour, mean_hair_colour(target, in_hair)),
        "exemplar_distance": delta_e(out_colour, mean_hair_colour(pair.exemplar.image, pair.exemplar.hair_mask)),
        "background_psnr": background_psnr(output, pair.input.image, in_hair),
        "psnr": psnr(output, target),
        "ssim": ssim(output, target),
    }


def pair_metrics(output: np.ndarray, input_mask: np.ndarray, exemplar_mask: np.ndarray, pair) -> dict[str, float]:
    """Every metric of one pair: output (H, W, 3) in [0, 255], masks (H, W) at image size in [0, 1]."""
    metrics = image_metrics(output, pair)
    metrics["input_mask_iou"] = mask_iou(input_mask, pair.input.hair_mask)
    metrics["exemplar_mask_iou"] = mask_iou(exemplar_mask, pair.exemplar.hair_mask)
    return {name: metrics[name] for name in METRICS}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


@dataclass
class MetricSummary:
    """Statistics of one metric over the pairs (NaN pairs, e.g. without hair, are left out and counted)."""

    mean: float
    median: float
    std: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "MetricSummary":
        array = np.asarray(list(values), dtype=np.float64)
        valid = array[~np.isnan(array)]
        if valid.size == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
        return cls(float(valid.mean()), float(np.median(valid)), float(valid.std()),
                   float(valid.min()), float(valid.max()), int(valid.size))


@dataclass
class ModelInfo:
    name: str | None            # display name: the checkpoint's `extra.name`, or the caller's label
    path: str | None            # checkpoint path (None for a model passed in memory)
    mask_mode: str              # "learned" (LOMIT) or "global" (the baseline)
    parameters: int | None      # generator parameters (None for ONNX graphs)
    step: int | None            # training step, from the checkpoint metadata / directory name / summary.json
    image_size: int             # the config's training size
    attributes: list[str]
    backend: str | None
    device: str


@dataclass
class EvalReport:
    """Metrics of one model on `pairs` synthetic translation pairs, plus the reference rows."""

    model: ModelInfo
    pairs: int
    seed: int
    split: str
    image_size: int             # the size the pairs were rendered and translated at
    hair_colours: list[str]     # the hair colours the pairs were drawn from (from the model's attributes)
    metrics: dict[str, MetricSummary]
    references: dict[str, dict[str, MetricSummary]]   # REFERENCES name -> metric -> summary
    seconds: float
    psnr_cap_db: float = PSNR_CAP_DB
    per_pair: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def mean(self, metric: str) -> float:
        return self.metrics[metric].mean

    def to_dict(self, per_pair: bool = False) -> dict[str, Any]:
        """JSON-ready (NaNs become None); `per_pair=True` adds every pair's values."""
        data = {
            "model": asdict(self.model),
            "pairs": self.pairs,
            "seed": self.seed,
            "split": self.split,
            "image_size": self.image_size,
            "hair_colours": self.hair_colours,
            "seconds": self.seconds,
            "psnr_cap_db": self.psnr_cap_db,
            "metrics": {name: asdict(s) for name, s in self.metrics.items()},
            "references": {ref: {name: asdict(s) for name, s in rows.items()}
                           for ref, rows in self.references.items()},
            "definitions": {name: asdict(info) for name, info in METRICS.items()},
        }
        if per_pair:
            data["per_pair"] = self.per_pair
        return _json_safe(data)

    def to_markdown(self) -> str:
        """A heading, a line about the model and data, and one table row per metric."""
        info = self.model
        title = info.name or info.path or "in-memory generator"
        params = f"{info.parameters:,} parameters" if info.parameters is not None else "parameters unknown"
        step = f"step {info.step}" if info.step is not None else "step unknown"
        lines = [
            f"## Evaluation: {title}",
            "",
            f"- model: `{info.path or 'in memory'}`, mask_mode `{info.mask_mode}`, {params}, {step}",
            f"- data: {self.pairs} synthetic pairs, split `{self.split}`, seed {self.seed}, "
            f"{self.image_size}x{self.image_size}; {self.seconds:.1f} s",
            "",
            "| metric | mean | median | std | identity (output = input) | ground truth (output = target) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in METRICS:
            s = self.metrics[name]
            refs = [self.references[r].get(name) for r in REFERENCES]
            cells = [_fmt(s.mean, name), _fmt(s.median, name), _fmt(s.std, name)]
            cells += [_fmt(r.mean, name) if r is not None else "–" for r in refs]
            lines.append(f"| {_metric_label(name)} | " + " | ".join(cells) + " |")
        lines += ["", _footnote(self.psnr_cap_db)]
        return "\n".join(lines) + "\n"


def comparison_markdown(reports: Mapping[str, EvalReport]) -> str:
    """One table, one row per model (means) plus the reference rows of the first report.

    The reports must come from the same pairs (same count, seed, split, size and hair colours).
    """
    if not reports:
        raise EvaluationError("no reports to compare")
    first = next(iter(reports.values()))
    for name, report in reports.items():
        if _pairs_key(report) != _pairs_key(first):
            raise EvaluationError(f"report {name!r} was computed on other pairs than the first one "
                                  f"({_pairs_key(report)} vs {_pairs_key(first)})")
    header = "| model | mask_mode | step | " + " | ".join(_metric_label(n) for n in METRICS) + " |"
    lines = [header, "|---|---|---:|" + "---:|" * len(METRICS)]
    for name, report in reports.items():
        step = "" if report.model.step is None else str(report.model.step)
        cells = [_fmt(report.metrics[m].mean, m) for m in METRICS]
        lines.append(f"| {name} | {report.model.mask_mode} | {step} | " + " | ".join(cells) + " |")
    for ref, (label, _) in REFERENCES.items():
        rows = first.references[ref]
        cells = [_fmt(rows[m].mean, m) if m in rows else "–" for m in METRICS]
        lines.append(f"| *{label}* | | | " + " | ".join(cells) + " |")
    lines += ["", f"Means over {first.pairs} synthetic pairs (split `{first.split}`, seed {first.seed}, "
                  f"{first.image_size}x{first.image_size}). " + _footnote(first.psnr_cap_db)]
    return "\n".join(lines) + "\n"


def _pairs_key(report: EvalReport) -> tuple:
    """What decides which pairs a report was computed on."""
    return (report.pairs, report.seed, report.split, report.image_size, tuple(report.hair_colours))


def _metric_label(name: str) -> str:
    meta = METRICS[name]
    unit = f" ({meta.unit})" if meta.unit else ""
    return f"{meta.label}{unit} {'↑' if meta.higher_is_better else '↓'}"


def _fmt(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3f}" if METRICS[metric].unit == "" else f"{value:.2f}"


def _footnote(cap: float) -> str:
    return (f"↑ higher is better, ↓ lower is better. PSNR of identical images is shown as the cap, {cap:g} dB. "
            "Hair colours are mean sRGB over the true hair (mask > 0.5), compared in CIELAB (ΔE76); "
            "background = pixels with hair_mask == 0; masks thresholded at 0.5.")


def _json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# Loading the model
# --------------------------------------------------------------------------------------------------


@dataclass
class _Model:
    generator: Any              # nn.Module or an lmt_fast.runtime generator (called as generator(x_in, x_ex))
    config: Any                 # LOMITConfig
    dtype: torch.dtype
    device: torch.device
    info: ModelInfo
    restore: Any = None         # undoes what evaluation changed on a caller's module


def _load_model(model, device: str, backend: str) -> _Model:
    from lmt_fast.translator import Translator

    device = _parse_device(device)
    if isinstance(model, (str, os.PathLike)):
        path = resolve_checkpoint(model)
        translator = Translator.load(path, device=device, backend=backend)
        return _from_translator(translator, path=path)
    if isinstance(model, Translator):
        return _from_translator(model, path=None)
    if isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        return _from_module(model, device, backend)
    raise EvaluationError(f"model must be a checkpoint path, a Translator or a LOMITGenerator, "
                          f"not {type(model).__name__}")


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """`path` itself, or for a training run directory that has no model at its top yet (the trainer
    writes one at its first checkpoint) the checkpoint its `latest` file names, else its newest
    checkpoints/step_* directory."""
    path = Path(path)
    if not path.is_dir() or (path / "config.json").is_file():
        return path
    latest = path / "latest"
    if latest.is_file():
        named = path / latest.read_text().strip()
        if (named / "config.json").is_file():
            return named
    steps = [p for p in (path / "checkpoints").glob("step_*")
             if p.name[5:].isdigit() and (p / "config.json").is_file()]
    return max(steps, key=lambda p: int(p.name[5:])) if steps else path


def _parse_device(device) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EvaluationError(f"invalid device {device!r}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"device {device!r} requested but CUDA is not available in this PyTorch build")
    return parsed


def _from_translator(translator, path: Path | None) -> _Model:
    generator = translator.generator
    info = _model_info(translator.config, generator, path, translator.backend, translator.device)
    return _Model(generator, translator.config, translator.dtype, translator.device, info)


def _from_module(module: torch.nn.Module, device: torch.device, backend: str) -> _Model:
    """Evaluate a caller's generator in place: moved to `device`, put in eval mode for the run and put
    back in its previous mode afterwards. backend="auto" keeps its op backend; another name sets it."""
    from lmt_fast.translator import TranslatorError, _resolve_model_backend

    was_training = module.training
    module.to(device).eval()
    resolved = None
    if backend != "auto":
        try:
            resolved = _resolve_model_backend(backend, device)
        except TranslatorError as exc:
            raise EvaluationError(str(exc)) from None
        module.set_backend(resolved)
    dtype = next(module.parameters()).dtype
    info = _model_info(module.config, module, None, resolved, device)
    return _Model(module, module.config, dtype, device, info, restore=lambda: module.train(was_training))


def _model_info(config, generator, path: Path | None, backend, device) -> ModelInfo:
    from lmt_fast.models import count_parameters

    extra = _checkpoint_extra(path) if path is not None else {}
    module = getattr(generator, "module", generator)  # a FusedGenerator keeps its prepared (folded) module
    parameters = count_parameters(module) if isinstance(module, torch.nn.Module) else None
    return ModelInfo(
        name=extra.get("name"),
        path=str(path) if path is not None else None,
        mask_mode=getattr(config, "mask_mode", "learned"),
        parameters=parameters,
        step=_training_step(path, extra) if path is not None else None,
        image_size=config.image_size,
        attributes=list(config.attributes),
        backend=backend,
        device=str(device),
    )


def _checkpoint_extra(path: Path) -> dict:
    """The `extra` dict of an lmt_fast checkpoint header ({} for ONNX exports and unreadable headers)."""
    from lmt_fast.io import CheckpointError, read_header

    try:
        header, _ = read_header(path)
    except CheckpointError:
        return {}
    extra = header.get("extra")
    return extra if isinstance(extra, dict) else {}


def _training_step(path: Path, extra: dict) -> int | None:
    """The training step: checkpoint metadata, else a step_NNNNNNN directory name, else summary.json."""
    import json
    import re

    for key in ("step", "trained_steps"):
        if isinstance(extra.get(key), int):
            return extra[key]
    match = re.fullmatch(r"step_(\d+)", path.name)
    if match:
        return int(match.group(1))
    summary = path / "summary.json" if path.is_dir() else None
    if summary is not None and summary.is_file():
        try:
            step = json.loads(summary.read_text()).get("step")
        except (ValueError, OSError):
            return None
        return step if isinstance(step, int) else None
    return None


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


def evaluate(model, pairs: int = 256, size: int | None = None, seed: int = 0, split: str = "test",
             batch_size: int = 16, device: str = "cpu", backend: str = "auto", progress: bool = False,
             grid_path: str | os.PathLike | None = None, grid_pairs: int = 4) -> EvalReport:
    """Score `model` on `pairs` held-out synthetic translation pairs; see the module docstring.

    model: a checkpoint path (anything `Translator.load` accepts), a Translator, or a LOMITGenerator
    (evaluated in place: moved to `device`, eval mode during the run, its training mode restored after).
    size: the rendering and translation size (default: the model's image_size; a multiple of the
    config's size_multiple). The pairs depend only on (pairs, size, seed, split, the model's hair
    attributes), so models with the same attributes are scored on the same pairs.
    grid_path: also write a PNG with one row per pair for the first `grid_pairs` pairs:
    input | exemplar | output | target | learned input mask | true input hair mask.
    """
    _check_counts(pairs, batch_size, grid_pairs)
    grid_path = _check_grid_path(grid_path, grid_pairs)
    started = time.perf_counter()
    loaded = _load_model(model, device, backend)
    try:
        dataset = _dataset(loaded.config, pairs, size, seed, split)
        per_pair, references, grid_rows = _score_all(loaded, dataset, batch_size, progress,
                                                     grid_pairs if grid_path else 0)
    finally:
        if loaded.restore is not None:
            loaded.restore()
    if grid_path is not None:
        _save_grid(grid_rows, grid_path)
    return EvalReport(
        model=loaded.info, pairs=pairs, seed=seed, split=split, image_size=dataset.size,
        hair_colours=list(dataset.hair_colours),
        metrics={name: MetricSummary.of(values) for name, values in per_pair.items()},
        references={ref: {name: MetricSummary.of(values) for name, values in rows.items()}
                    for ref, rows in references.items()},
        seconds=time.perf_counter() - started, per_pair=per_pair)


def _check_counts(pairs: int, batch_size: int, grid_pairs: int) -> None:
    for name, value, least in (("pairs", pairs, 1), ("batch_size", batch_size, 1), ("grid_pairs", grid_pairs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise EvaluationError(f"{name} must be an integer >= {least}, got {value!r}")


def _check_grid_path(grid_path, grid_pairs: int) -> Path | None:
    """Validate the grid's path before any work, so a typo does not cost a whole evaluation."""
    if grid_path is None:
        return None
    if grid_pairs < 1:
        raise EvaluationError("grid_pairs must be >= 1 when a grid is written")
    from lmt_fast.io import ImageError, check_image_path

    try:
        return check_image_path(grid_path)
    except ImageError as exc:
        raise EvaluationError(f"grid: {exc}") from None


def _dataset(config, pairs: int, size: int | None, seed: int, split: str):
    from lmt_train.data.synthetic import ATTRIBUTES, SPLITS, SyntheticPairs

    size = config.image_size if size is None else size
    multiple = config.size_multiple
    if isinstance(size, bool) or not isinstance(size, int) or size < multiple or size % multiple:
        raise EvaluationError(f"size must be a positive multiple of the model's size_multiple ({multiple}), "
                              f"got {size!r}")
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    # Only hair colours matter here; attributes the renderer does not know (e.g. CelebA's Male) are ignored.
    attributes = [name for name in config.attributes if name in ATTRIBUTES]
    try:
        return SyntheticPairs(size=size, length=pairs, seed=seed, attributes=attributes, split=split)
    except ValueError as exc:
        raise EvaluationError(f"the model's attributes {list(config.attributes)} do not fit the synthetic "
                              f"pairs: {exc}") from None


def _score_all(loaded: _Model, dataset, batch_size: int, progress: bool, grid_pairs: int):
    per_pair = {name: [] for name in METRICS}
    references = {ref: {name: [] for name in IMAGE_METRICS} for ref in REFERENCES}
    grid_rows = []
    bar = _progress_bar(len(dataset), progress)
    try:
        for start in range(0, len(dataset), batch_size):
            batch = [dataset.pair(i) for i in range(start, min(start + batch_size, len(dataset)))]
            outputs, input_masks, exemplar_masks = _translate(loaded, batch, dataset.size)
            for pair, output, m_in, m_ex in zip(batch, outputs, input_masks, exemplar_masks):
                _append(per_pair, pair_metrics(output, m_in, m_ex, pair))
                for ref, (_, role) in REFERENCES.items():
                    _append(references[ref], image_metrics(getattr(pair, role).image.astype(np.float64), pair))
                if len(grid_rows) < grid_pairs:
                    grid_rows.append(_grid_row(pair, output, m_in))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return per_pair, references, grid_rows


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluating", unit="pair")


def _append(columns: dict[str, list], values: Mapping[str, float]) -> None:
    for name, value in values.items():
        columns[name].append(value)


def _translate(loaded: _Model, batch, size: int):
    """Run the paired forward on a batch: outputs (N, H, W, 3) in [0, 255] and masks (N, H, W) at image size."""
    from lmt_train.data.synthetic import image_to_tensor

    x_in = torch.stack([image_to_tensor(p.input.image) for p in batch]).to(loaded.device, loaded.dtype)
    x_ex = torch.stack([image_to_tensor(p.exemplar.image) for p in batch]).to(loaded.device, loaded.dtype)
    with torch.no_grad():
        out = loaded.generator(x_in, x_ex)
    image = out.image.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5)
    outputs = image.permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    return outputs, upsample_mask(out.input_mask, size), upsample_mask(out.exemplar_mask, size)


# --------------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------------


def _grid_row(pair, output: np.ndarray, learned_mask: np.ndarray) -> list[np.ndarray]:
    """The tiles of GRID_COLUMNS for one pair, as uint8 RGB."""
    return [pair.input.image, pair.exemplar.image, _to_uint8(output), pair.target.image,
            _mask_tile(learned_mask), _mask_tile(pair.input.hair_mask)]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(image, np.float64) + 0.5, 0, 255).astype(np.uint8)


def _mask_tile(mask: np.ndarray) -> np.ndarray:
    return np.repeat(_to_uint8(np.asarray(mask) * 255.0)[..., None], 3, axis=2)


def _save_grid(rows: list[list[np.ndarray]], path: Path, gap: int = 2) -> Path:
    from PIL import Image

    from lmt_fast.io import ImageError, save_image
    from lmt_train.data.synthetic import join_tiles

    joined = join_tiles([join_tiles(tiles, axis=1, gap=gap) for tiles in rows], axis=0, gap=gap)
    try:
        return save_image(Image.fromarray(joined), path)
    except ImageError as exc:
        raise EvaluationError(f"grid: {exc}") from None
