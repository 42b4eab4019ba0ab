"""The trainer: loss terms on hand-checkable tensors, real training steps of the tiny model, checkpoints,
exact resume, TensorBoard output, Translator loading, signals, configs and the `lmt-train train` CLI."""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmt_train import losses
from lmt_train.config import ConfigError, LossWeights, TrainConfig, load_config
from lmt_train.data.folder import DatasetError
from lmt_train.trainer import (LATEST_FILE, STATE_FILE, Trainer, TrainingError, flatten_state,
                               load_trainer_state, unflatten_state)

ROOT = Path(__file__).resolve().parents[1]

# The trainer's logic is under test here, so the generator runs on the reference ops; the fast op
# backends are checked against the reference in their own tests.
BACKEND = "reference"
# The tiny model at 32x32 (d_layers 4 keeps the critic's last map at 2x2), batch 2, no progress bar.
TINY = [f"backend={BACKEND}", "model_preset=tiny", "data.image_size=32", "model.d_layers=4", "batch_size=2", "n_critic=2",
        "progress=false", "threads=1", "data.synthetic_length=6", "log_every=1", "sample_every=1000",
        "checkpoint_every=1000"]


def tiny_config(run_dir, *overrides) -> TrainConfig:
    return load_config(None, [*TINY, f"run_dir={json.dumps(str(run_dir))}", *overrides])


# -- loss terms on hand-checkable tensors ----------------------------------------------------------

def test_l1_and_attribute_bce():
    assert losses.l1(torch.zeros(2, 3), torch.full((2, 3), 2.0)).item() == pytest.approx(2.0)
    logits = torch.zeros(4, 3)  # sigmoid(0) = 0.5: every entry costs log 2, summed over 3 attributes
    target = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    assert losses.attribute_bce(logits, target).item() == pytest.approx(3 * math.log(2))


def test_gradient_penalty_of_a_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)
    w = w * (3.0 / w.norm())                       # ‖∇‖ = 3 everywhere: GP = (3 - 1)² = 4

    def critic(x):
        return (x * w).sum(dim=(1, 2, 3))

    real, fake, alpha = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4), torch.rand(5, 1, 1, 1)
    assert losses.gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(4.0, rel=1e-5)
    # A loss scale (fp16's GradScaler) changes nothing but the intermediate gradient's size.
    assert losses.gradient_penalty(critic, real, fake, alpha, grad_scale=1024.0).item() == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_uses_one_alpha_per_sample():
    def critic(x):                                 # ∇_x 0.5‖x‖² = x: the norm is ‖x̂‖ of each sample
        return 0.5 * x.flatten(1).square().sum(1)

    real, fake = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    alpha = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    x_hat = alpha * real + (1 - alpha) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert losses.gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_penalty_is_differentiable_for_the_critic():
    critic = nn.Linear(4, 1, bias=False)
    real, fake, alpha = torch.randn(6, 4), torch.randn(6, 4), torch.rand(6, 1)
    losses.gradient_penalty(lambda x: critic(x), real, fake, alpha).backward()
    # GP = (‖w‖ − 1)² for a linear critic: dGP/dw = 2 (‖w‖ − 1) w / ‖w‖.
    w = critic.weight.detach()
    assert torch.allclose(critic.weight.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-6)


def test_mask_min_is_the_sum_of_means():
    a, b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    assert losses.mask_min([a, b]).item() == pytest.approx(a.mean().item() + b.mean().item())


def test_mask_similarity_by_hand():
    ones = torch.ones(1, 3, 1, 2)                    # two identical positions: cosine 1 everywhere
    mask = torch.tensor([[[[0.2, 0.8]]]])
    # mean over 1·2·2 of |m_i − m_j| = (0 + 0.6 + 0.6 + 0) / 4
    assert losses.mask_similarity([mask], ones).item() == pytest.approx(0.3, rel=1e-6)
    opposite = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])   # cosine −1 off the diagonal
    assert losses.mask_similarity([mask], opposite).item() == pytest.approx(-0.3, rel=1e-6)
    orthogonal = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])                # S = I: only i = j counts
    assert losses.mask_similarity([mask], orthogonal).item() == pytest.approx(0.0, abs=1e-7)


def test_mask_similarity_is_zero_for_constant_masks_and_ignores_content_gradients():
    content = torch.randn(2, 8, 4, 4, requires_grad=True)
    constant = torch.full((2, 1, 4, 4), 0.3, requires_grad=True)
    value = losses.mask_similarity([constant, constant * 0 + 0.9], content)
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    varying = torch.rand(2, 1, 4, 4, requires_grad=True)
    losses.mask_similarity([varying], content).backward()
    assert content.grad is None and varying.grad is not None  # S is built from the detached content


def test_total_variation_and_style_regulariser():
    mask = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])   # two horizontal steps of 1, no vertical change
    assert losses.total_variation([mask, mask]).item() == pytest.approx(4.0)
    assert losses.style_regulariser(torch.zeros(2, 4), torch.ones(2, 4)).item() == pytest.approx(-1.0)


class _StubCritic(nn.Module):
    """Linear critic with ‖∇‖ = 2 per sample and zero attribute logits."""

    def __init__(self, attributes=3):
        super().__init__()
        self.w = nn.Parameter(torch.full((1, 3, 2, 2), 2.0 / math.sqrt(12)))
        self.attributes = attributes

    def forward(self, x):
        scores = (x * self.w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        return scores, (x * 0).sum(dim=(1, 2, 3))[:, None].expand(-1, self.attributes)


def test_discriminator_objective_sums_both_directions():
    critic = _StubCritic()
    x_real, x_fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)   # [A; B] with B = 2
    y = torch.randint(0, 2, (4, 3)).float()
    weights = LossWeights()
    result = losses.discriminator_objective(critic, x_real, x_fake, y, torch.rand(4, 1, 1, 1), weights)
    real_scores = critic(x_real)[0].flatten()
    fake_scores = critic(x_fake)[0].flatten()
    assert result.terms["real"].item() == pytest.approx(-(real_scores[:2].mean() + real_scores[2:].mean()).item(), rel=1e-5)
    assert result.terms["fake"].item() == pytest.approx((fake_scores[:2].mean() + fake_scores[2:].mean()).item(), rel=1e-5)
    assert result.terms["gp"].item() == pytest.approx(2 * (2 - 1) ** 2, rel=1e-5)      # per direction (2−1)²
    assert result.terms["cls"].item() == pytest.approx(2 * 3 * math.log(2), rel=1e-6)   # per direction A·log 2
    expected = (result.terms["real"] + result.terms["fake"] + weights.cls * result.terms["cls"]
                + weights.gp * result.terms["gp"])
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)


def _tiny_models(seed=0):
    from lmt_fast.models import LOMITConfig, LOMITDiscriminator, LOMITGenerator

    torch.manual_seed(seed)
    cfg = LOMITConfig.tiny(image_size=32, d_layers=4)
    generator = LOMITGenerator(cfg).train()
    generator.set_backend(BACKEND)
    return generator, LOMITDiscriminator(cfg).train()


def test_generator_objective_terms_weights_and_gradients():
    generator, discriminator = _tiny_models()
    discriminator.requires_grad_(False)
    x_a, x_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    y_a, y_b = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]), torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 1]])
    weights = LossWeights(mask_smooth=0.5, style_reg=0.25)
    result = losses.generator_objective(generator, discriminator, x_a, x_b, y_a, y_b, weights)
    assert set(result.terms) == {*losses.GENERATOR_TERMS, "total"}
    assert all(torch.isfinite(v) for v in result.terms.values())
    expected = result.terms["adv"] + sum(getattr(weights, k) * result.terms[k] for k in losses.GENERATOR_TERMS[1:])
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-5)
    result.total.backward()
    missing = [n for n, p in generator.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(p.grad is None for p in discriminator.parameters())
    assert result.images["translation"].shape == (2, 3, 32, 32)
    assert result.images["input_mask"].shape == (2, 1, 8, 8)


def test_generator_objective_mask_calls_follow_the_official_graph():
    """Six masks: m_A, m_B, m_AB, m_BA, and m_AA = Mask(c_A, c_A), m_BB = Mask(c_B, c_B)."""
    generator, discriminator = _tiny_models()
    calls = []
    original = generator.compute_mask

    def spy(c_self, c_other):
        calls.append(c_self is c_other or torch.equal(c_self, c_other))
        return original(c_self, c_other)

    generator.compute_mask = spy
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    losses.generator_objective(generator, discriminator, x, x.flip(0), torch.zeros(2, 4), torch.ones(2, 4), LossWeights())
    assert len(calls) == 6
    assert calls[-2:] == [True, True]


# -- training steps ----------------------------------------------------------------------------------

def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_training_steps_update_d_every_iteration_and_g_every_n_critic(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", "n_critic=2"))
    g0, d0 = _params(trainer.generator), _params(trainer.discriminator)
    x_a, y_a = trainer.stream.next()
    x_b, y_b = trainer.stream.next()
    d = trainer.critic_step(x_a, x_b, y_a, y_b)
    assert set(d.terms) == {*losses.DISCRIMINATOR_TERMS, "total"}
    assert all(torch.isfinite(v) for v in d.terms.values())
    assert all(torch.equal(a, b) for a, b in zip(g0, _params(trainer.generator)))      # D step leaves G
    assert any(not torch.equal(a, b) for a, b in zip(d0, _params(trainer.discriminator)))
    d1 = _params(trainer.discriminator)
    g = trainer.generator_step(x_a, x_b, y_a, y_b)
    assert all(torch.isfinite(v) for v in g.terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, _params(trainer.generator)))
    assert all(torch.equal(a, b) for a, b in zip(d1, _params(trainer.discriminator)))  # G step leaves D
    assert all(p.requires_grad for p in trainer.discriminator.parameters())

    fresh = Trainer(tiny_config(tmp_path / "run2", "n_critic=2"))
    for _ in range(5):
        fresh.train_iteration()
    steps = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert (steps(fresh.opt_d), steps(fresh.opt_g)) == (5, 3)          # G at iterations 0, 2, 4


def test_official_init_keeps_the_style_path_alive(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run"))
    conv = trainer.generator.style_encoder.convs[1].conv
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.1)   # Kaiming, a = 0
    assert all(float(m.bias.detach().abs().max()) == 0 for m in trainer.generator.modules() if isinstance(m, nn.Conv2d))
    d_weights = torch.cat([m.weight.flatten() for m in trainer.discriminator.modules() if isinstance(m, nn.Conv2d)])
    assert d_weights.std().item() == pytest.approx(0.02, rel=0.05)
    # Style codes must depend on the image (PyTorch's default init leaves them nearly constant).
    x = torch.stack([trainer.dataset[i]["image"] for i in range(6)])
    with torch.no_grad():
        c = trainer.generator.encode_content(x)
        codes = trainer.generator.encode_style(x, trainer.generator.compute_mask(c, c), "foreground")
    assert codes.std(dim=0).mean().item() > 1e-2
    default = Trainer(tiny_config(tmp_path / "run2", "init=pytorch"))
    assert any(float(m.bias.detach().abs().max()) > 0 for m in default.generator.modules() if isinstance(m, nn.Conv2d))


def test_lr_schedule_steps_after_decay_start(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", "lr=1e-3", "lr_decay_start=1", "lr_decay_every=2", "n_critic=5"))
    lrs = []
    for _ in range(6):
        trainer.train_iteration()
        lrs.append(trainer.opt_d.param_groups[0]["lr"])
    # stepped after iterations 2, 3, 4, 5 (i > 1): halves after every second step
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(2.5e-4)


def test_fit_writes_checkpoints_tensorboard_samples_and_a_loadable_run(tmp_path, image_files):
    from lmt_fast import Translator
    from lmt_fast.io import load_checkpoint

    run = tmp_path / "run"
    result = Trainer(tiny_config(run, "iterations=4", "checkpoint_every=2", "keep_last=1", "sample_every=2",
                                 "log_every=2")).fit()
    assert result.step == 4 and not result.interrupted
    assert (run / LATEST_FILE).read_text().strip() == "checkpoints/step_0000004"
    assert not (run / "checkpoints" / "step_0000002").exists()          # pruned: keep_last = 1
    step_dir = run / "checkpoints" / "step_0000004"
    assert (step_dir / STATE_FILE).is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "samples" / "step_0000004.png").is_file()
    assert all(math.isfinite(v) for v in result.losses.values()) and "G/mask_sim" in result.losses
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and summary["replicas_identical"] is True

    checkpoint = load_checkpoint(step_dir, discriminator=True)
    assert checkpoint.discriminator is not None and checkpoint.metadata["extra"]["step"] == 4
    assert checkpoint.metadata["extra"]["train_config"]["batch_size"] == 2
    translator = Translator.load(run)                                     # the run directory itself
    out = translator.translate(image_files.rgb64_png, image_files.rgb_png)
    assert out.image.size == (64, 64)


def test_tensorboard_scalars_name_every_term(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    Trainer(tiny_config(run, "iterations=2", "log_every=2")).fit()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {f"loss/G/{t}" for t in losses.GENERATOR_TERMS} | {f"loss/D/{t}" for t in losses.DISCRIMINATOR_TERMS}
    assert expected | {"loss/G/total", "loss/D/total", "lr/G", "lr/D", "speed/seconds_per_iteration"} <= tags
    assert "samples" in events.Tags()["images"]


def test_resume_continues_exactly(tmp_path):
    common = ["lr_decay_start=1", "lr_decay_every=2", "checkpoint_every=3", "n_critic=2"]
    straight = Trainer(tiny_config(tmp_path / "a", "iterations=6", *common))
    straight.fit()
    Trainer(tiny_config(tmp_path / "b", "iterations=3", *common)).fit()
    resumed = Trainer(tiny_config(tmp_path / "b", "iterations=6", *common), resume=True)
    assert resumed.step == 3
    resumed.fit()
    for name in ("generator", "discriminator"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    for name in ("opt_g", "opt_d"):
        a, b = getattr(straight, name).state_dict()["state"], getattr(resumed, name).state_dict()["state"]
        assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    assert straight._last_losses == resumed._last_losses
    assert straight.opt_g.param_groups[0]["lr"] == resumed.opt_g.param_groups[0]["lr"]


def test_trainer_state_round_trips_without_pickle(tmp_path):
    import random

    state = {"opt": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
                     "param_groups": [{"betas": (0.5, 0.999), "lr": 1e-4, "params": [0]}]},
             "rng": {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}}
    tensors = {}
    skeleton = flatten_state(state, tensors, "state")
    json.dumps(skeleton)                                                  # the skeleton is plain JSON
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert list(back["opt"]["state"]) == [0] and back["opt"]["param_groups"][0]["betas"] == (0.5, 0.999)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert back["rng"]["numpy"][1].dtype == np.uint32
    np.random.set_state(back["rng"]["numpy"])
    random.setstate(back["rng"]["python"])


def test_sigint_saves_and_stops_then_resume_finishes(tmp_path):
    class Interrupted(Trainer):
        def train_iteration(self):
            super().train_iteration()
            if self.step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    result = Interrupted(tiny_config(run, "iterations=5")).fit()
    assert result.interrupted and result.step == 2
    assert signal.getsignal(signal.SIGINT) is previous                   # handlers restored
    assert (run / LATEST_FILE).read_text().strip() == "checkpoints/step_0000002"
    assert load_trainer_state(run / "checkpoints" / "step_0000002" / STATE_FILE)["step"] == 2
    assert Trainer(tiny_config(run, "iterations=5"), resume=True).fit().step == 5


def test_bf16_autocast_step_on_cpu(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", "amp=bf16"))
    trainer.train_iteration()
    assert all(math.isfinite(float(v)) for v in trainer._window.means().values())


# -- configuration and errors ----------------------------------------------------------------------

def test_config_defaults_are_the_official_setup():
    cfg = TrainConfig().validate()
    assert (cfg.lr, cfg.betas, cfg.batch_size, cfg.n_critic, cfg.iterations) == (1e-4, (0.5, 0.999), 8, 5, 200_000)
    assert (cfg.lr_decay_start, cfg.lr_decay_every, cfg.lr_decay_gamma) == (100_000, 10_000, 0.5)
    w = cfg.loss
    assert (w.gp, w.cls, w.x_rec, w.x_cyc, w.c, w.s_f, w.s_b) == (10, 1, 10, 10, 1, 1, 1)
    assert (w.mask_min, w.mask_sim, w.mask_smooth, w.style_reg) == (1e-4, 0.1, 0, 0)
    assert cfg.model_config().base_dim == 64 and cfg.model_config().image_size == 128


def test_config_files_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model_preset = "tiny"\nlr = 3e-4\n[data]\nimage_size = 32\n[model]\nd_layers = 4\n')
    cfg = load_config(path, ["lr=2e-4", "model.base_dim=16", "data.attributes=Black_Hair,Smiling", "iterations=2e3"])
    assert (cfg.lr, cfg.iterations, cfg.data.attributes) == (2e-4, 2000, ("Black_Hair", "Smiling"))
    model = cfg.model_config()
    assert (model.base_dim, model.d_layers, model.image_size, model.attributes) == (16, 4, 32, ("Black_Hair", "Smiling"))
    as_json = tmp_path / "c.json"
    as_json.write_text(json.dumps(cfg.to_dict()))
    assert load_config(as_json) == cfg
    from lmt_train.mgst.config import load_mgst_config

    for shipped in sorted((ROOT / "configs").iterdir()):
        (load_mgst_config if shipped.name.startswith("mgst_") else load_config)(shipped)


@pytest.mark.parametrize("override, message", [
    ("bogus=1", "unknown config key(s): bogus"),
    ("data.colour=1", "unknown config key(s): data.colour"),
    ("lr=fast", "lr must be a number"),
    ("amp=fp8", "amp must be one of"),
    ("model.image_size=64", "model.image_size is set through data.image_size"),
    ("model.nope=3", "unknown model key(s): model.nope"),
    ("noequals", "must look like key=value"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_dataset_and_resume_errors(tmp_path):
    with pytest.raises(DatasetError, match="CelebA folder not found: .*nowhere"):
        Trainer(tiny_config(tmp_path / "run", "data.kind=celeba", f"data.path={json.dumps(str(tmp_path / 'nowhere'))}"))
    with pytest.raises(DatasetError, match="'Purple_Hair' not in the synthetic dataset; available: .*Black_Hair"):
        Trainer(tiny_config(tmp_path / "run", "data.attributes=Black_Hair,Purple_Hair"))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Trainer(tiny_config(tmp_path / "run", "amp=fp16", "device=cpu"))
    with pytest.raises(TrainingError, match="cannot resume: no checkpoint"):
        (tmp_path / "empty").mkdir()
        Trainer(tiny_config(tmp_path / "empty"), resume=True)


def test_resume_refuses_another_model(tmp_path):
    Trainer(tiny_config(tmp_path / "run", "iterations=1")).fit()
    with pytest.raises(TrainingError, match="model config differs.*base_dim"):
        Trainer(tiny_config(tmp_path / "run", "iterations=2", "model.base_dim=4"), resume=True)


# -- the CLI ---------------------------------------------------------------------------------------

def run_train_cli(capsys, *argv):
    from lmt_train.cli import main

    capsys.readouterr()
    code = main(["train", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_cli_trains_resumes_and_prints_where_the_model_is(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for item in TINY for a in ("--set", item)]
    code, _, err = run_train_cli(capsys, "--config", ROOT / "configs" / "tiny_synthetic.toml", *sets,
                                 "--iterations", 2, "--run-dir", run)
    assert code == 0, err
    assert f"Translator.load({str(run)!r})" in err[-1]
    code, _, err = run_train_cli(capsys, "--run-dir", run, "--resume", "--iterations", 3)   # config from the run
    assert code == 0, err
    assert (run / LATEST_FILE).read_text().strip() == "checkpoints/step_0000003"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "celeba", "--data-path", "/definitely/not/here"], "CelebA folder not found: /definitely/not/here"),
    (["--set", "data.attributes=Blue_Hair"], "'Blue_Hair' not in the synthetic dataset"),
    (["--set", "bogus=1"], "unknown config key(s): bogus"),
    (["--config", "/no/such.toml"], "config file not found: /no/such.toml"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--resume"], "cannot resume"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, message):
    sets = [a for item in TINY for a in ("--set", item)]
    code, _, err = run_train_cli(capsys, *sets, "--run-dir", tmp_path / "run", *argv)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("lmt-train: error: ") and message in err[0], err


def test_python_dash_m_entry_point(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "lmt_train", "train", "--set", "bogus=1"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("lmt-train: error: unknown config key(s): bogus (known: ")
