"""The MGST training loop: `MGSTTrainer(config).fit()` or `train_mgst(config)`.

Each iteration draws a batch of real images (with masks and pupil-centre labels) and an unpaired batch of
synthetic images (with masks), updates the discriminator once (LSGAN, synthetic = real), then the
generator once. The generator's style is, with probability `stored_style_prob`, the stored
synthetic-domain style (an exponential moving average of synthetic images' region styles, updated on the
other steps), otherwise the style of the synthetic batch (one style image per real image), so both
inference paths of lmt_fast.purifier are trained.

Before training starts the task regressor is loaded (`regressor = PATH`) or trained on synthetic eyes into
<run_dir>/regressor (lmt_train.mgst.regressor), then frozen.

A run directory holds (as for LOMIT; the shared plumbing is lmt_train.runs):
    train_config.json                  the MGSTTrainConfig of the run
    config.json, model.safetensors     the newest generator as an MGST checkpoint: Purifier.load(run_dir)
    checkpoints/step_0000250/          MGST checkpoint with G and D ... plus trainer_state.safetensors
                                       (optimisers, EMA style, data position, RNG states; no pickle)
    latest                             the newest checkpoint's path relative to the run directory
    regressor/                         the frozen task regressor (unless `regressor` names one)
    samples/step_0000250.png           rows: real | purified (stored style) | purified (style image) |
                                       style image | mask
    log.jsonl                          one line of loss means (and validation error) per log interval
    summary.json                       written at the end

Every saved generator carries a *calibrated* stored style: the mean region style of the first
`calibration_images` synthetic images under the current weights (the EMA is kept for training only, in the
trainer state), so what Purifier uses is exactly the synthetic domain's average.
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lmt_fast.models.mgst import (
    MGSTDiscriminator, MGSTGenerator, MGSTStyle, count_parameters, load_mgst_checkpoint, save_mgst_checkpoint,
)
from lmt_train.config_utils import ConfigError, save_config
from lmt_train.data.folder import DatasetError
from lmt_train.mgst.config import MGSTTrainConfig
from lmt_train.mgst.features import RandomFeatures
from lmt_train.mgst.losses import Batch, DiscriminatorObjective, GeneratorObjective
from lmt_train.runs import (
    STATE_FILE, SUMMARY_FILE, TRAIN_CONFIG_FILE, capture_rng_state, check_finite_losses, checkpoint_dir,
    find_resume_checkpoint, latest_checkpoint, load_trainer_state, prune_checkpoints, restore_rng_state,
    restore_weights, run_iterations, save_png, save_trainer_state, seed_everything, tile_grid, write_latest,
)

LOG_FILE = "log.jsonl"
REGRESSOR_DIR = "regressor"
SYNTHETIC_SEED_OFFSET = 1000   # the synthetic pool never shares geometry with the real images


@dataclass
class MGSTTrainResult:
    step: int
    run_dir: Path
    checkpoint: Path | None
    interrupted: bool = False
    losses: dict[str, float] = field(default_factory=dict)
    seconds_per_iteration: float | None = None
    validation: dict[str, float] = field(default_factory=dict)


def train_mgst(config: MGSTTrainConfig, resume=None) -> MGSTTrainResult:
    return MGSTTrainer(config, resume=resume).fit()


class IndexStream:
    """Endless shuffled batches of indices; reshuffled every epoch from (seed, stream, epoch); resumable."""

    def __init__(self, length: int, batch_size: int, seed: int, stream: int):
        if length < batch_size:
            raise DatasetError(f"the dataset has {length} images, fewer than one batch of {batch_size}; "
                               "lower batch_size or add images")
        self.length, self.batch_size, self.seed, self.stream = length, batch_size, seed, stream
        self.epoch = self.batch = 0

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def seek(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = int(epoch), int(batch)

    def next(self) -> np.ndarray:
        if (self.batch + 1) * self.batch_size > self.length:
            self.epoch, self.batch = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.stream, self.epoch]).permutation(self.length)
        start = self.batch * self.batch_size
        self.batch += 1
        return order[start:start + self.batch_size]


def _stack(dataset: Dataset, indices, keys) -> list[torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return [torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys]


def build_real_dataset(cfg: MGSTTrainConfig, split: str = "train", length: int | None = None) -> Dataset:
    from lmt_train.data.eyes import SyntheticEyes

    if cfg.data.kind == "folder":
        from lmt_train.data.eye_folder import EyeFolder

        return EyeFolder(cfg.data.path, size=cfg.model.image_size)
    return SyntheticEyes(length or cfg.data.real_length, seed=cfg.seed, split=split, size=cfg.model.image_size,
                         rendering="real", cache=cfg.data.cache)


def build_synthetic_dataset(cfg: MGSTTrainConfig) -> Dataset:
    from lmt_train.data.eyes import SyntheticEyes

    return SyntheticEyes(cfg.data.synthetic_length, seed=cfg.seed + SYNTHETIC_SEED_OFFSET, split="train",
                         size=cfg.model.image_size, rendering="synthetic", cache=cfg.data.cache)


class _Window:
    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, group: str, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            key = f"{group}/{name}"
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


class MGSTTrainer:
    """Trains an MGST generator (or the global baseline) as `config` says; `fit()` runs the loop."""

    def __init__(self, config: MGSTTrainConfig, resume=None):
        self.config = cfg = config.validate()
        self.run_dir = Path(cfg.run_dir)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available in this PyTorch build")
        seed_everything(cfg.seed)
        self.real = build_real_dataset(cfg)
        self.synthetic = build_synthetic_dataset(cfg)
        self.real_stream = IndexStream(len(self.real), cfg.batch_size, cfg.seed, 0)
        self.syn_stream = IndexStream(len(self.synthetic), cfg.batch_size, cfg.seed, 1)
        self.regressor_path = self._regressor()
        from lmt_train.mgst.regressor import load_network

        self.regressor = load_network(self.regressor_path, "regressor").to(self.device)
        if tuple(self.regressor.image_size) != cfg.model.image_size:
            raise ConfigError(f"the regressor {self.regressor_path} works on {self.regressor.image_size} images, the "
                              f"model on {cfg.model.image_size}")
        seed_everything(cfg.seed)  # the same weights whether or not a regressor was trained first
        self.generator = MGSTGenerator(cfg.model).to(self.device).train()
        self.generator.set_backend(cfg.backend)
        self.discriminator = MGSTDiscriminator(cfg.model).to(self.device).train()
        self.features = RandomFeatures(cfg.loss.feature_seed, cfg.loss.feature_width).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.g_objective = GeneratorObjective(self.generator, self.discriminator, self.regressor, self.features, cfg.loss)
        self.d_objective = DiscriminatorObjective(self.discriminator)
        self.step = 0
        self.checkpoint: Path | None = None
        self.seconds_per_iteration: float | None = None
        self.validation: dict[str, float] = {}
        self._window = _Window()
        self._last_losses: dict[str, float] = {}
        self._validation_set = None
        with torch.no_grad():  # start the EMA at the initial network's domain style
            self.generator.set_stored_style(self.calibrated_style(), cfg.calibration_images)
        if resume:
            self.resume_from(find_resume_checkpoint(resume, self.run_dir))

    # -- setup -------------------------------------------------------------------------------------
    def _regressor(self) -> Path:
        cfg = self.config
        if cfg.regressor:
            path = Path(cfg.regressor)
            if not (path / "config.json").is_file():
                raise ConfigError(f"regressor = {str(path)!r} is not a trained regressor directory "
                                  "(train one with lmt-train mgst regressor, or leave regressor unset)")
            return path
        path = self.run_dir / REGRESSOR_DIR
        if (path / "config.json").is_file():
            return path
        from lmt_train.mgst.regressor import train_network

        if cfg.progress:
            print(f"lmt-train mgst: no regressor given; training the task regressor into {path}", file=sys.stderr)
        _, report = train_network(cfg.task_regressor, path, cfg.model.image_size, progress=cfg.progress,
                                  threads=cfg.threads, eval_count=max(1, min(500, cfg.validation_images)))
        if cfg.progress:
            print(f"lmt-train mgst: regressor error on synthetic / real test eyes: "
                  f"{report['synthetic_error_px']} / {report['real_error_px']} px", file=sys.stderr)
        return path

    def _batch(self) -> Batch:
        real, mask, centre = _stack(self.real, self.real_stream.next(), ("image", "mask", "pupil_centre"))
        style, style_mask = _stack(self.synthetic, self.syn_stream.next(), ("image", "mask"))
        d = self.device
        return Batch(real.to(d), mask.to(d), centre.float().to(d), style.to(d), style_mask.to(d))

    @torch.no_grad()
    def calibrated_style(self, generator: MGSTGenerator | None = None) -> MGSTStyle:
        """Mean region style of the first `calibration_images` synthetic images (eval mode)."""
        g = generator or self.generator
        count = min(self.config.calibration_images, len(self.synthetic))
        was_training = g.training
        g.eval()
        gammas, betas = [], []
        for start in range(0, count, 128):
            x, m = _stack(self.synthetic, range(start, min(count, start + 128)), ("image", "mask"))
            s = g.style_from_image(x.to(self.device), m.to(self.device))
            gammas.append(s.gamma.float())
            betas.append(s.beta.float())
        g.train(was_training)
        return MGSTStyle.average(MGSTStyle(torch.cat(gammas), torch.cat(betas)))

    # -- steps -------------------------------------------------------------------------------------
    def train_iteration(self) -> None:
        cfg = self.config
        batch = self._batch()
        use_stored = bool(torch.rand(()) < cfg.stored_style_prob)
        # generator first (its output feeds the critic step), critic frozen meanwhile
        self.discriminator.requires_grad_(False)
        try:
            result = self.g_objective(batch, use_stored)
            self.opt_g.zero_grad(set_to_none=True)
            result.total.backward()
            self.opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        self._window.add("G", result.terms)
        d_result = self.d_objective(batch.style, result.images["purified"])
        self.opt_d.zero_grad(set_to_none=True)
        d_result.total.backward()
        self.opt_d.step()
        self._window.add("D", d_result.terms)
        if not use_stored:  # the style-image step computed the synthetic batch's styles: update the EMA
            with torch.no_grad():
                mean = MGSTStyle.average(result.images["style"])
                g, mom = self.generator, cfg.style_momentum
                g.style_std.mul_(mom).add_((1 - mom) * mean.gamma[0])
                g.style_mean.mul_(mom).add_((1 - mom) * mean.beta[0])
        self.step += 1

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> MGSTTrainResult:
        from tqdm import tqdm

        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / TRAIN_CONFIG_FILE)
        if cfg.progress:
            m = cfg.model
            print(f"lmt-train mgst: {m.mask_mode} model {m.image_height}x{m.image_width} "
                  f"(G {count_parameters(self.generator):,} / D {count_parameters(self.discriminator):,} parameters), "
                  f"{cfg.data.kind} data ({len(self.real)} real, {len(self.synthetic)} synthetic), batch "
                  f"{cfg.batch_size}, {self.device}, step {self.step}/{cfg.iterations}, run dir {self.run_dir}",
                  file=sys.stderr)
        bar = tqdm(total=cfg.iterations, initial=self.step, unit="it", dynamic_ncols=True, disable=not cfg.progress,
                   desc="mgst" if cfg.model.mask_mode == "regions" else "global", file=sys.stderr)
        try:
            end = run_iterations(self, cfg.iterations, bar, log_every=cfg.log_every, sample_every=cfg.sample_every,
                                 checkpoint_every=cfg.checkpoint_every, log=lambda: self._log(bar),
                                 write_samples=self.write_samples)
            if end.seconds_per_iteration is not None:
                self.seconds_per_iteration = end.seconds_per_iteration
            self._write_summary(end.interrupted, end.seconds)
        finally:
            bar.close()
        return MGSTTrainResult(self.step, self.run_dir, self.checkpoint or latest_checkpoint(self.run_dir),
                               end.interrupted, dict(self._last_losses), self.seconds_per_iteration,
                               dict(self.validation))

    def _log(self, bar) -> None:
        losses = self._window.means()
        check_finite_losses(losses, self.step, self.run_dir)
        self._last_losses = losses
        with (self.run_dir / LOG_FILE).open("a") as f:
            f.write(json.dumps({"step": self.step, **{k: round(v, 6) for k, v in losses.items()}}) + "\n")
        shown = {k.split("/")[1]: f"{losses[k]:.3g}" for k in ("G/total", "G/task") if k in losses}
        if self.validation:
            shown["val_px"] = f"{self.validation['real_purified_error_px']:.2f}"
        bar.set_postfix(shown, refresh=False)

    @torch.no_grad()
    def validate(self, generator: MGSTGenerator) -> dict[str, float]:
        """Task regressor's pupil error on held-out "real" validation eyes: raw and purified (stored style)."""
        from lmt_train.mgst.regressor import pixel_error

        if self.config.data.kind != "synthetic" or not self.config.validation_images:
            return {}
        if self._validation_set is None:
            val = build_real_dataset(self.config, split="val", length=self.config.validation_images)
            self._validation_set = [t.to(self.device) for t in _stack(val, range(len(val)), ("image", "mask", "pupil_centre"))]
        x, m, c = self._validation_set
        size = self.config.model.image_size
        generator.eval()
        y = generator(x, m)
        return {"real_raw_error_px": round(float(pixel_error(self.regressor(x), c, size).mean()), 4),
                "real_purified_error_px": round(float(pixel_error(self.regressor(y), c, size).mean()), 4)}

    # -- samples -------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self) -> Path:
        from lmt_train.data.eyes import SyntheticEyes

        n = self.config.num_samples
        size = self.config.model.image_size
        real = SyntheticEyes(n, seed=self.config.seed, split="val", size=size, rendering="real", cache=False) \
            if self.config.data.kind == "synthetic" else self.real
        x, m = (t.to(self.device) for t in _stack(real, range(min(n, len(real))), ("image", "mask")))
        xs, ms = (t.to(self.device) for t in _stack(self.synthetic, range(len(x)), ("image", "mask")))
        g = self.generator
        g.eval()
        try:
            y_stored = g(x, m)
            y_image = g(x, m, g.style_from_image(xs, ms))
        finally:
            g.train()
        columns = [x, y_stored, y_image, xs, m.expand(-1, 3, -1, -1) * 2 - 1]
        grid = tile_grid([((t.float().cpu() + 1) / 2).clamp(0, 1) for t in columns])
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        save_png(grid, path)
        return path

    # -- checkpoints -------------------------------------------------------------------------------
    def export_generator(self) -> MGSTGenerator:
        """A copy of the generator in eval mode with the calibrated stored style (what checkpoints hold)."""
        g = copy.deepcopy(self.generator).eval()
        g.set_stored_style(self.calibrated_style(g), min(self.config.calibration_images, len(self.synthetic)))
        return g

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": {"real": self.real_stream.position(), "synthetic": self.syn_stream.position()},
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "style_ema": {"mean": self.generator.style_mean.clone(), "std": self.generator.style_std.clone()},
            "rng": capture_rng_state(self.device),
        }

    def save(self) -> Path:
        """checkpoints/step_N (G with calibrated style + D + trainer state), the root generator, `latest`."""
        g = self.export_generator()
        self.validation = self.validate(g)
        path = checkpoint_dir(self.run_dir, self.step)
        extra = {"step": self.step, "train_config": self.config.to_dict(), "trainer": "lmt_train.mgst",
                 "regressor": str(self.regressor_path), "validation": self.validation}
        save_mgst_checkpoint(g, path, discriminator=self.discriminator, extra=extra)
        save_trainer_state(path / STATE_FILE, self.state_dict())
        save_mgst_checkpoint(g, self.run_dir, extra={**extra, "checkpoint": path.name})
        write_latest(self.run_dir, path)
        prune_checkpoints(self.run_dir, self.config.keep_last, protect=path)
        self.checkpoint = path
        return path

    def resume_from(self, path: Path) -> None:
        state = load_trainer_state(path / STATE_FILE)
        restore_weights(path, load_mgst_checkpoint, self.config.model, self.generator, self.discriminator)
        with torch.no_grad():  # the checkpoint holds the calibrated style; training continues from the EMA
            self.generator.style_mean.copy_(state["style_ema"]["mean"])
            self.generator.style_std.copy_(state["style_ema"]["std"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.step = int(state["step"])
        self.real_stream.seek(**state["data"]["real"])
        self.syn_stream.seek(**state["data"]["synthetic"])
        restore_rng_state(state["rng"], self.device)
        self.checkpoint = path

    def _write_summary(self, interrupted: bool, seconds: float) -> None:
        summary = {"step": self.step, "iterations": self.config.iterations, "interrupted": interrupted,
                   "device": str(self.device), "threads": torch.get_num_threads(),
                   "seconds_per_iteration": self.seconds_per_iteration, "wall_seconds": round(seconds, 1),
                   "losses": self._last_losses, "validation": self.validation,
                   "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                   "regressor": str(self.regressor_path),
                   "parameters": {"generator": count_parameters(self.generator),
                                  "discriminator": count_parameters(self.discriminator)}}
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
