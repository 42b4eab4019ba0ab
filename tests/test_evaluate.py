"""lmt_train.evaluate: metrics on constructed inputs with known answers, evaluate() on tiny models (learned
and global masks), the `lmt-train eval` command and benchmarks/bench_quality.py.

Everything runs on LOMITConfig.tiny() models and a handful of small pairs, so the file takes seconds.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmt_fast.io import CheckpointError, save_checkpoint
from lmt_fast.models import LOMITConfig, LOMITGenerator, count_parameters
from lmt_fast.models.lomit import GeneratorOutput
from lmt_train.data.synthetic import SyntheticPairs, make_translation_pair
from lmt_train.evaluate import (
    METRICS,
    PSNR_CAP_DB,
    EvaluationError,
    MissingDependencyError,
    background_psnr,
    comparison_markdown,
    delta_e,
    evaluate,
    image_metrics,
    mask_iou,
    mean_hair_colour,
    pair_metrics,
    psnr,
    resolve_checkpoint,
    srgb_to_lab,
    ssim,
    upsample_mask,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pair():
    """One real 32x32 translation pair (black/blond/... hair; the exemplar's colour differs)."""
    return make_translation_pair(7, 32)


def tiny_generator(seed: int = 0, **overrides) -> LOMITGenerator:
    torch.manual_seed(seed)
    return LOMITGenerator(LOMITConfig.tiny(**overrides))


class IdentityGenerator(nn.Module):
    """Returns its input unchanged with all-ones masks: must score exactly like the identity reference."""

    def __init__(self):
        super().__init__()
        self.config = LOMITConfig.tiny()
        self.scale = nn.Parameter(torch.ones(()))  # one parameter, so the module has a dtype and a count

    def forward(self, x_in, x_ex):
        n, _, h, w = x_in.shape
        ones = x_in.new_ones(n, 1, h // 4, w // 4)
        return GeneratorOutput(x_in * self.scale, ones, ones)


def hair_fractions(pairs: int, size: int, seed: int = 0, role: str = "input") -> list[float]:
    """The share of each pair's image that is hair (> 0.5): the IoU of an all-ones mask."""
    data = SyntheticPairs(size=size, length=pairs, seed=seed, split="test")
    return [float((getattr(data.pair(i), role).hair_mask > 0.5).mean()) for i in range(pairs)]


# -- colour ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rgb, lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),     # published sRGB red (D65)
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),   # published sRGB blue (D65)
    ((0.5, 0.5, 0.5), (53.3890, 0.0, 0.0)),
])
def test_srgb_to_lab_matches_published_values(rgb, lab):
    np.testing.assert_allclose(srgb_to_lab(rgb), lab, atol=2e-3)


def test_delta_e_is_a_distance_in_lab():
    assert delta_e((0.3, 0.5, 0.2), (0.3, 0.5, 0.2)) == 0.0
    assert delta_e((1, 1, 1), (0, 0, 0)) == pytest.approx(100.0, abs=1e-4)
    assert delta_e((0.5, 0.2, 0.1), (0.5, 0.2, 0.12)) < delta_e((0.5, 0.2, 0.1), (0.5, 0.2, 0.3))


def test_mean_hair_colour_weights_by_the_mask_and_skips_edge_pixels():
    image = np.array([[[100, 100, 100], [200, 200, 200]],
                      [[50, 50, 50], [0, 0, 0]]], dtype=np.float64)
    mask = np.array([[1.0, 0.8], [0.3, 0.0]])  # 0.3 is an anti-aliased edge pixel: left out
    expected = (1.0 * 100 + 0.8 * 200) / 1.8 / 255.0
    np.testing.assert_allclose(mean_hair_colour(image, mask), [expected] * 3)
    assert np.isnan(mean_hair_colour(image, np.full((2, 2), 0.4))).all()


# -- image metrics -----------------------------------------------------------------------------------

def test_psnr_of_a_uniform_offset_and_of_identical_images():
    a = np.full((8, 8, 3), 120.0)
    assert psnr(a, a + 10.0) == pytest.approx(20 * math.log10(255 / 10))
    assert psnr(a, a) == PSNR_CAP_DB
    where = np.zeros((8, 8), bool)
    where[:2] = True
    b = a.copy()
    b[2:] += 50.0  # differs only outside `where`
    assert psnr(a, b, where=where) == PSNR_CAP_DB
    assert math.isnan(psnr(a, b, where=np.zeros((8, 8), bool)))


def test_the_exact_answer_scores_perfectly(pair):
    metrics = image_metrics(pair.target.image.astype(np.float64), pair)
    assert metrics["style_error"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["background_psnr"] == PSNR_CAP_DB
    assert metrics["psnr"] == PSNR_CAP_DB
    assert metrics["ssim"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["exemplar_distance"] > 0.5  # other scene, other shading: even the answer is not at 0


def test_no_translation_keeps_the_background_but_misses_the_colour(pair):
    metrics = image_metrics(pair.input.image.astype(np.float64), pair)
    assert metrics["background_psnr"] == PSNR_CAP_DB
    assert metrics["style_error"] > 5.0
    assert metrics["psnr"] < 40.0
    assert metrics["ssim"] < 1.0


def test_recolouring_the_whole_image_lowers_background_psnr(pair):
    shifted = pair.target.image.astype(np.float64) + 10.0  # unclipped: every pixel off by exactly 10
    metrics = image_metrics(shifted, pair)
    assert metrics["background_psnr"] == pytest.approx(20 * math.log10(255 / 10))
    assert metrics["style_error"] > 1.0


def test_background_psnr_ignores_everything_with_any_hair(pair):
    hairy = pair.input.hair_mask > 0
    output = pair.input.image.astype(np.float64)
    output[hairy] = 0.0  # wreck the hair and its anti-aliased edge only
    assert background_psnr(output, pair.input.image, pair.input.hair_mask) == PSNR_CAP_DB
    output[~hairy] += 5.0
    assert background_psnr(output, pair.input.image, pair.input.hair_mask) < 40.0


def test_ssim_drops_with_noise(pair):
    noisy = pair.target.image + np.random.default_rng(0).normal(0, 30, pair.target.image.shape)
    assert ssim(pair.target.image, pair.target.image) == pytest.approx(1.0)
    assert ssim(noisy, pair.target.image) < 0.8


def test_ssim_names_the_missing_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage.metrics", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match="pip install scikit-image"):
        ssim(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))


# -- masks -------------------------------------------------------------------------------------------

def test_mask_iou_of_known_rectangles():
    predicted = np.zeros((8, 8))
    predicted[0:4] = 0.9
    true = np.zeros((8, 8))
    true[2:6] = 1.0
    assert mask_iou(predicted, true) == pytest.approx(2 / 6)
    assert mask_iou(true, true) == 1.0
    assert mask_iou(np.full((8, 8), 0.5), true) == 0.0  # the threshold is strict: 0.5 is not inside
    assert mask_iou(np.zeros((8, 8)), np.zeros((8, 8))) == 1.0


def test_upsampled_content_masks_line_up_with_the_image():
    left = torch.zeros(1, 1, 4, 4)
    left[..., :2] = 1.0
    up = upsample_mask(left, 16)
    assert up.shape == (1, 16, 16)
    true = np.zeros((16, 16))
    true[:, :8] = 1.0
    assert mask_iou(up[0], true) == 1.0
    assert upsample_mask(torch.ones(2, 1, 4, 4), 16).min() == 1.0


def test_an_all_ones_mask_scores_the_hair_share(pair):
    ones = np.ones((32, 32))
    metrics = pair_metrics(pair.input.image.astype(np.float64), ones, ones, pair)
    assert metrics["input_mask_iou"] == pytest.approx((pair.input.hair_mask > 0.5).mean())
    assert metrics["exemplar_mask_iou"] == pytest.approx((pair.exemplar.hair_mask > 0.5).mean())
    assert list(metrics) == list(METRICS)


# -- evaluate() ----------------------------------------------------------------------------------------

def test_evaluate_a_tiny_learned_model():
    generator = tiny_generator()
    generator.train()
    report = evaluate(generator, pairs=5, size=32, batch_size=2)
    assert generator.training  # its mode is given back
    assert report.pairs == 5 and report.image_size == 32 and report.split == "test"
    assert set(report.metrics) == set(METRICS)
    for name, summary in report.metrics.items():
        assert summary.count == 5 and math.isfinite(summary.mean), name
        assert summary.min <= summary.median <= summary.max
    assert 0.0 <= report.mean("input_mask_iou") <= 1.0
    assert report.mean("background_psnr") < PSNR_CAP_DB  # an untrained model changes the background
    assert report.model.mask_mode == "learned"
    assert report.model.parameters == count_parameters(generator)
    assert report.model.path is None and report.model.step is None


def test_results_do_not_depend_on_the_batch_size():
    one = evaluate(tiny_generator(), pairs=4, size=32, batch_size=1)
    four = evaluate(tiny_generator(), pairs=4, size=32, batch_size=4)
    for name in METRICS:
        np.testing.assert_allclose(one.per_pair[name], four.per_pair[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_identity_model_scores_like_the_identity_reference():
    report = evaluate(IdentityGenerator(), pairs=4, size=32, batch_size=3)
    identity = report.references["identity"]
    for name in ("style_error", "exemplar_distance", "psnr", "ssim"):
        assert report.mean(name) == pytest.approx(identity[name].mean, rel=1e-4, abs=1e-4), name
    assert report.mean("background_psnr") > 80.0  # [-1, 1] -> [0, 255] round trip: float error only
    assert identity["background_psnr"].mean == PSNR_CAP_DB
    assert report.references["ground_truth"]["style_error"].mean == pytest.approx(0.0, abs=1e-9)
    assert report.mean("input_mask_iou") == pytest.approx(np.mean(hair_fractions(4, 32)))
    # the identity reference really is "input vs target" on the test split's pairs
    data = SyntheticPairs(size=32, length=4, seed=0, split="test")
    expected = [delta_e(mean_hair_colour(p.input.image, p.input.hair_mask),
                        mean_hair_colour(p.target.image, p.input.hair_mask)) for p in map(data.pair, range(4))]
    assert report.per_pair["style_error"] == pytest.approx(expected, rel=1e-4)


def test_evaluate_a_global_baseline():
    generator = tiny_generator(mask_mode="global")
    report = evaluate(generator, pairs=4, size=32)
    assert report.model.mask_mode == "global"
    assert report.mean("input_mask_iou") == pytest.approx(np.mean(hair_fractions(4, 32)))
    assert report.mean("exemplar_mask_iou") == pytest.approx(np.mean(hair_fractions(4, 32, role="exemplar")))
    assert "`global`" in report.to_markdown()


def test_the_seed_picks_other_pairs():
    a = evaluate(IdentityGenerator(), pairs=2, size=32, seed=0)
    b = evaluate(IdentityGenerator(), pairs=2, size=32, seed=1)
    assert a.per_pair["style_error"] != b.per_pair["style_error"]


def test_report_serialises_to_json_and_markdown():
    report = evaluate(tiny_generator(), pairs=2, size=32)
    data = json.loads(json.dumps(report.to_dict(per_pair=True), allow_nan=False))
    assert data["pairs"] == 2 and data["model"]["mask_mode"] == "learned"
    assert set(data["metrics"]) == set(METRICS) and len(data["per_pair"]["psnr"]) == 2
    assert data["references"]["identity"]["background_psnr"]["mean"] == PSNR_CAP_DB
    text = report.to_markdown()
    for meta in METRICS.values():
        assert meta.label in text
    assert "identity (output = input)" in text


def test_comparison_table_has_a_row_per_model_and_the_references():
    a = evaluate(IdentityGenerator(), pairs=2, size=32)
    b = evaluate(tiny_generator(mask_mode="global"), pairs=2, size=32)
    table = comparison_markdown({"identity-model": a, "global": b})
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "identity-model", "global", "*identity (output = input)*", "*ground truth (output = target)*"]
    other = evaluate(IdentityGenerator(), pairs=3, size=32)
    with pytest.raises(EvaluationError, match="other pairs"):
        comparison_markdown({"a": a, "b": other})


def test_grid_has_one_row_per_pair_and_six_columns(tmp_path):
    from PIL import Image

    path = tmp_path / "grids" / "grid.png"
    evaluate(tiny_generator(), pairs=3, size=32, grid_path=path, grid_pairs=2)
    with Image.open(path) as grid:
        assert grid.size == (6 * 32 + 5 * 2, 2 * 32 + 2)
        pixels = np.asarray(grid)
    true_mask = pixels[:32, 5 * 34:5 * 34 + 32]
    data = SyntheticPairs(size=32, length=1, seed=0, split="test")
    np.testing.assert_array_equal(true_mask[..., 0], (data.pair(0).input.hair_mask * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("kwargs, message", [
    ({"pairs": 0}, "pairs must be an integer >= 1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"size": 50}, "multiple of the model's size_multiple"),
    ({"split": "holdout"}, "unknown split 'holdout'"),
    ({"device": "nonsense"}, "invalid device 'nonsense'"),
    ({"grid_path": "grid.unknownformat"}, "cannot tell the image format"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(EvaluationError, match=message):
        evaluate(tiny_generator(), **{"pairs": 1, **kwargs})


def test_bad_models_are_named(tmp_path):
    with pytest.raises(EvaluationError, match="not int"):
        evaluate(42, pairs=1)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        evaluate(tmp_path / "missing", pairs=1)


# -- checkpoints: step and run directories -------------------------------------------------------------

def test_step_comes_from_metadata_or_directory_name(tmp_path):
    generator = tiny_generator()
    with_extra = save_checkpoint(generator, tmp_path / "a", extra={"step": 7, "name": "seven"})
    report = evaluate(with_extra, pairs=1, size=32)
    assert (report.model.step, report.model.name, report.model.path) == (7, "seven", str(with_extra))
    run = tmp_path / "run"
    for step in (2, 10):
        save_checkpoint(generator, run / "checkpoints" / f"step_{step:07d}")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000010"  # newest, by number
    (run / "latest").write_text("checkpoints/step_0000002\n")
    assert resolve_checkpoint(run) == run / "checkpoints" / "step_0000002"
    assert evaluate(run, pairs=1, size=32).model.step == 2


# -- the CLI -------------------------------------------------------------------------------------------

@pytest.fixture
def eval_cli(capsys):
    """Run `lmt-train eval ...` in-process: returns (exit code, stdout, non-empty stderr lines)."""
    from lmt_train.cli import main

    def run(*argv):
        capsys.readouterr()
        code = main(["eval", *map(str, argv)])
        captured = capsys.readouterr()
        return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]

    return run


def test_cli_evaluates_a_checkpoint_end_to_end(tiny_checkpoint, tmp_path, eval_cli):
    out = tmp_path / "out"
    code, stdout, err = eval_cli(tiny_checkpoint, "--pairs", 3, "--batch-size", 2, "--size", 32,
                                 "--json", out / "r.json", "--markdown", out / "r.md", "--grid", out / "g.png",
                                 "--no-progress")
    assert code == 0, err
    assert "| input mask IoU ↑ |" in stdout and str(tiny_checkpoint) in stdout
    data = json.loads((out / "r.json").read_text())
    assert data["pairs"] == 3 and len(data["per_pair"]["ssim"]) == 3
    assert data["model"]["path"] == str(tiny_checkpoint)
    assert (out / "r.md").read_text() == stdout
    assert (out / "g.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["/definitely/not/here"], "checkpoint not found: /definitely/not/here"),
    (["{ckpt}", "--pairs", "0"], "pairs must be an integer >= 1"),
    (["{ckpt}", "--pairs", "many"], "invalid int value: 'many'"),
    (["{ckpt}", "--device", "cuda:7" if not torch.cuda.is_available() else "nonsense"], "device"),
    (["{ckpt}", "--grid", "out.xyz"], "cannot tell the image format"),
])
def test_cli_user_errors_are_one_line(tiny_checkpoint, eval_cli, argv, message):
    code, stdout, err = eval_cli(*[a.format(ckpt=tiny_checkpoint) for a in argv])
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lmt-train: error: ") and message in err[0], err
    assert stdout == ""


# -- benchmarks/bench_quality.py -----------------------------------------------------------------------

def test_bench_quality_writes_json_and_markdown(tiny_checkpoint, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    baseline = save_checkpoint(tiny_generator(mask_mode="global"), tmp_path / "global")
    out = tmp_path / "results"
    assert bench.main(["--model", f"lomit={tiny_checkpoint}", "--baseline", str(baseline), "--pairs", "2",
                       "--out-dir", str(out), "--no-progress"]) == 0
    [result] = out.glob("quality_*.json")
    doc = json.loads(result.read_text())
    assert list(doc["models"]) == ["lomit", "baseline"]
    assert doc["models"]["baseline"]["model"]["mask_mode"] == "global"
    assert doc["pairs"] == 2 and doc["seed"] == 0 and "--pairs 2" in doc["command"]
    assert doc["versions"]["torch"] == torch.__version__
    assert doc["references"]["identity"]["background_psnr"]["mean"] == PSNR_CAP_DB
    table = result.with_suffix(".md").read_text()
    assert "| lomit | learned |" in table and "| baseline | global |" in table
    assert "*identity (output = input)*" in table
