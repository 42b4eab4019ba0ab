"""MGST training: losses, a real (tiny) run that writes a checkpoint Purifier loads, exact resume, the CLI,
and the evaluation's metrics."""
import json

import numpy as np
import pytest
import torch

from lmt_fast.models.mgst import load_mgst_checkpoint
from lmt_fast.purifier import Purifier
from lmt_train.config import ConfigError
from lmt_train.mgst.config import RegressorConfig, load_mgst_config
from lmt_train.mgst.evaluate import frechet_distance
from lmt_train.mgst.features import RandomFeatures, region_masks, region_moments, style_distance
from lmt_train.mgst.losses import task_error
from lmt_train.mgst.regressor import load_network, train_network
from lmt_train.mgst.trainer import MGSTTrainer


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    path = tmp_path_factory.mktemp("regressor") / "reg"
    cfg = RegressorConfig(iterations=3, batch_size=8, synthetic_length=16)
    _, report = train_network(cfg, path, progress=False, eval_count=4)
    assert set(report) >= {"synthetic_error_px", "real_error_px"}
    return path


def _config(run_dir, regressor, *extra):
    return load_mgst_config(None, [
        f'run_dir="{run_dir}"', f'regressor="{regressor}"', "iterations=4", "batch_size=4",
        "data.real_length=12", "data.synthetic_length=12", "calibration_images=8", "validation_images=8",
        "checkpoint_every=2", "sample_every=4", "log_every=2", "num_samples=2", "progress=false",
        "model.base_dim=8", "model.encoder_blocks=1", "model.decoder_blocks=1", *extra])


def test_a_real_run_writes_checkpoints_that_purifier_loads(tmp_path, regressor):
    result = MGSTTrainer(_config(tmp_path / "run", regressor)).fit()
    assert result.step == 4 and not result.interrupted
    assert np.isfinite(list(result.losses.values())).all()
    assert {"G/task", "G/style_att", "G/style_bkgd", "G/content_att", "D/total"} <= set(result.losses)
    assert set(result.validation) == {"real_raw_error_px", "real_purified_error_px"}
    run = tmp_path / "run"
    assert (run / "latest").read_text().strip() == "checkpoints/step_0000004"
    assert (run / "samples" / "step_0000004.png").is_file() and (run / "summary.json").is_file()
    assert len(list((run / "checkpoints").iterdir())) == 2  # keep_last
    purifier = Purifier.load(run)
    assert int(purifier.generator.style_images) == 8
    x = np.zeros((36, 60, 3), np.uint8)
    m = np.zeros((36, 60), np.uint8)
    m[10:20, 20:30] = 255
    assert purifier.purify(x, m).image.shape == (36, 60, 3)
    saved = load_mgst_checkpoint(result.checkpoint, discriminator=True)
    assert saved.discriminator is not None and saved.metadata["extra"]["step"] == 4


def test_resume_continues_exactly(tmp_path, regressor):
    straight = MGSTTrainer(_config(tmp_path / "a", regressor)).fit()
    MGSTTrainer(_config(tmp_path / "b", regressor, "iterations=2")).fit()
    resumed = MGSTTrainer(_config(tmp_path / "b", regressor), resume=True).fit()
    assert resumed.step == straight.step == 4
    a = load_mgst_checkpoint(straight.checkpoint, discriminator=True)
    b = load_mgst_checkpoint(resumed.checkpoint, discriminator=True)
    for module in ("generator", "discriminator"):
        for key, value in getattr(a, module).state_dict().items():
            assert torch.equal(getattr(b, module).state_dict()[key], value), f"{module}.{key}"


def test_global_baseline_trains_with_the_same_objective(tmp_path, regressor):
    result = MGSTTrainer(_config(tmp_path / "g", regressor, "model.mask_mode=global", "iterations=1")).fit()
    assert load_mgst_checkpoint(result.checkpoint).config.mask_mode == "global"
    assert result.losses["G/style_bkgd"] > 0  # region losses still see the true masks


def test_losses():
    phi = RandomFeatures(seed=1, width=4)
    x = torch.rand(2, 3, 36, 60) * 2 - 1
    m = torch.zeros(2, 1, 36, 60)
    m[:, :, 8:20, 20:36] = 1
    same = style_distance(region_moments(phi(x), region_masks(m)), region_moments(phi(x), region_masks(m)))
    assert same.shape == (2, 2) and same.abs().max() < 1e-10
    # restyling only the attention region moves only the attention term
    y = x.clone()
    y[:, :, 8:20, 20:36] = y[:, :, 8:20, 20:36] * 0.3 + 0.5
    d = style_distance(region_moments([y], region_masks(m)), region_moments([x], region_masks(m)))
    assert (d[:, 0] > 1e-3).all() and d[:, 1].abs().max() < 1e-10

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return torch.tensor([[0.0, 0.0]]).expand(images.shape[0], 2)  # always the image centre

    centre = torch.tensor([[30.0, 18.0], [33.0, 22.0], [float("nan"), float("nan")]])
    assert torch.isclose(task_error(Fixed(), torch.zeros(3, 3, 36, 60), centre), torch.tensor(12.5))
    assert task_error(Fixed(), torch.zeros(1, 3, 36, 60), centre[2:]) == 0


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="stored_style_prob must lie in"):
        load_mgst_config(None, ["stored_style_prob=1.5"])
    with pytest.raises(ConfigError, match="data.path is required"):
        load_mgst_config(None, ["data.kind=folder"])
    with pytest.raises(ConfigError, match="not a trained regressor"):
        MGSTTrainer(load_mgst_config(None, [f'regressor="{tmp_path}"', f'run_dir="{tmp_path}/r"',
                                            "data.real_length=16", "data.synthetic_length=16"]))
    for name in ("mgst_small", "mgst_global"):
        cfg = load_mgst_config(f"configs/{name}.toml")
        assert cfg.model.mask_mode == ("regions" if name == "mgst_small" else "global")


def test_regressor_checkpoint_kind_is_checked(regressor):
    assert load_network(regressor).image_size == (36, 60)
    from lmt_fast.io import CheckpointError

    with pytest.raises(CheckpointError, match="is a pupil regressor checkpoint, not a pupil segmenter"):
        load_network(regressor, "segmenter")


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 3, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert abs(frechet_distance(a, a + torch.tensor([2.0, 0, 0], dtype=torch.float64)) - 4.0) < 1e-6
    assert frechet_distance(a, 3 * a) > 5


def test_cli(tmp_path, regressor, capsys):
    from lmt_train.mgst.cli import main

    run = tmp_path / "cli_run"
    args = ["train", "--run-dir", str(run), "--iterations", "1", "--set", f'regressor="{regressor}"',
            "--set", "data.real_length=8", "--set", "data.synthetic_length=8", "--set", "batch_size=4",
            "--set", "calibration_images=4", "--set", "validation_images=4", "--set", "progress=false",
            "--set", "model.base_dim=8"]
    assert main(args) == 0
    assert "finished step 1" in capsys.readouterr().err
    assert main(["train", "--set", "bogus=1"]) == 2
    assert capsys.readouterr().err.startswith("lmt-train mgst: error: unknown config key(s): bogus")
    assert main(["eval", "--purifier", f"mgst={run}", "--regressor", f"task={regressor}", "--count", "4",
                 "--json", str(tmp_path / "eval.json")]) == 0
    table = capsys.readouterr().out
    assert "| mgst |" in table and "| raw real |" in table
    assert json.loads((tmp_path / "eval.json").read_text())["count"] == 4


def test_training_on_a_folder_of_real_images(tmp_path, regressor):
    """data.kind = folder: PNG frames + masks + a labels CSV with one frame left unlabelled."""
    from PIL import Image

    from lmt_train.data.eyes import SyntheticEyes

    root = tmp_path / "frames"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["filename,pupil_x,pupil_y"]
    data = SyntheticEyes(6, seed=5, rendering="real", cache=False)
    for i in range(6):
        s = data.sample(i)
        Image.fromarray(np.round(s.real * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.where(s.mask > 0.5, 255, 0).astype(np.uint8)).save(root / "masks" / f"{i}.png")
        if i:
            rows.append(f"{i}.png,{s.pupil_centre[0]},{s.pupil_centre[1]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    result = MGSTTrainer(_config(tmp_path / "run", regressor, "data.kind=folder", f'data.path="{root}"',
                                 "iterations=2")).fit()
    assert result.step == 2 and np.isfinite(result.losses["G/task"]) and result.validation == {}
