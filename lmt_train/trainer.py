"""The LOMIT training loop: `Trainer(config).fit()` or `train(config)`.

Each iteration draws a batch of inputs and a batch of exemplars from the same loader, updates D, and
updates G when iteration % n_critic == 0; after `lr_decay_start` both StepLR schedulers step once per
iteration (reference/lomit.md §4.5).

A run directory holds:
    train_config.json                  the TrainConfig of the run
    config.json, model.safetensors     the newest generator as an lmt_fast checkpoint: Translator.load(run_dir)
    checkpoints/step_0001000/          lmt_fast checkpoint with G and D (extra: step, train_config) ...
        trainer_state.safetensors      ... plus optimisers, schedulers, grad scalers, data position and every
                                       rank's RNG states (tensors + a JSON skeleton in the metadata; no pickle)
    latest                             text: the newest checkpoint's path relative to the run directory
    tensorboard/                       scalars (every loss term, LRs, speed) and sample grids
    samples/step_0001000.png           the same sample grids as PNGs
    summary.json                       written at the end: steps, timing, last losses, replica checksums

Resuming (`resume=True`) restores all of that, so the following iterations compute exactly what an
uninterrupted run computes. The run directory's plumbing, shared with the MGST trainer, is lmt_train.runs
(its names stay importable from here).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lmt_fast.io import load_checkpoint, save_checkpoint
from lmt_fast.models import LOMITDiscriminator, LOMITGenerator, count_parameters
from lmt_train import distributed
from lmt_train.config import ConfigError, DataConfig, TrainConfig, save_config
from lmt_train.data.folder import DatasetError, select_attributes
from lmt_train.losses import DiscriminatorObjective, GeneratorObjective, LossResult, translate_pair
from lmt_train.runs import (
    CHECKPOINT_DIR, LATEST_FILE, METADATA_KEY, STATE_FILE, STATE_FORMAT, STATE_VERSION, SUMMARY_FILE,
    TRAIN_CONFIG_FILE, StopSignals, TrainingError, capture_rng_state, check_finite_losses, checkpoint_dir,
    find_resume_checkpoint, flatten_state, latest_checkpoint, load_trainer_state, prune_checkpoints,
    restore_rng_state, restore_weights, run_iterations, save_png, save_trainer_state, seed_everything, tile_grid,
    unflatten_state, write_latest,
)

__all__ = [
    "BatchStream", "PortraitImages", "Trainer", "TrainResult", "build_dataset", "official_init", "sample_grid",
    "state_checksum", "train",
    # lmt_train.runs, importable from here as before it existed
    "CHECKPOINT_DIR", "LATEST_FILE", "METADATA_KEY", "STATE_FILE", "STATE_FORMAT", "STATE_VERSION",
    "SUMMARY_FILE", "TRAIN_CONFIG_FILE", "StopSignals", "TrainingError", "capture_rng_state", "checkpoint_dir",
    "find_resume_checkpoint", "flatten_state", "latest_checkpoint", "load_trainer_state", "prune_checkpoints",
    "restore_rng_state", "save_png", "save_trainer_state", "seed_everything", "unflatten_state", "write_latest",
]


@dataclass
class TrainResult:
    step: int                      # iterations completed
    run_dir: Path
    checkpoint: Path | None        # the newest checkpoint directory
    interrupted: bool = False      # stopped by SIGINT / SIGTERM (after saving)
    losses: dict[str, float] = field(default_factory=dict)   # the last logged window's means
    seconds_per_iteration: float | None = None


def train(config: TrainConfig, resume: bool | str | os.PathLike | None = None) -> TrainResult:
    """Train with `config` (resume=True continues from the run directory's latest checkpoint)."""
    return Trainer(config, resume=resume).fit()


# -- datasets --------------------------------------------------------------------------------------

class PortraitImages(Dataset):
    """Synthetic portraits reduced to {"image", "labels", "index"}; with cache=True each image is kept
    (as uint8, converted back exactly) after its first rendering, so later epochs cost no rendering."""

    def __init__(self, portraits, cache: bool = True):
        self.portraits = portraits
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.portraits)

    def __getitem__(self, index: int) -> dict:
        if self.cache is not None and index in self.cache:
            pixels, labels = self.cache[index]
            return {"image": pixels.float().div_(127.5).sub_(1.0), "labels": labels, "index": index}
        item = self.portraits[index]
        if self.cache is not None:
            pixels = item["image"].add(1.0).mul_(127.5).round_().to(torch.uint8)
            self.cache[index] = (pixels, item["labels"])
        return {"image": item["image"], "labels": item["labels"], "index": index}


def build_dataset(data: DataConfig, image_size: int, seed: int) -> Dataset:
    """The training dataset a DataConfig describes; problems raise DatasetError with one line."""
    if data.kind == "synthetic":
        from lmt_train.data.synthetic import ATTRIBUTES, SyntheticPortraits

        select_attributes(ATTRIBUTES, data.attributes, "the synthetic dataset")
        split = "test" if data.split == "test" else "train"
        portraits = SyntheticPortraits(size=image_size, length=data.synthetic_length, seed=seed,
                                       attributes=data.attributes, split=split)
        return PortraitImages(portraits, cache=data.cache)
    if data.kind == "celeba":
        from lmt_train.data.celeba import CelebA

        return CelebA(data.path, data.attributes, image_size, split=data.split, crop=data.crop,
                      flip=data.flip and data.split == "train", hair_filter=data.hair_filter,
                      test_rows=data.test_rows, seed=seed)
    from lmt_train.data.folder import AttributeFolder

    return AttributeFolder(data.path, data.attributes, image_size, csv_path=data.csv, crop=data.crop,
                           flip=data.flip, seed=seed)


class BatchStream:
    """Endless batches from a sharded loader that reshuffles every epoch.

    Its position (epoch, batches read in that epoch) is part of the trainer state: seeking back to it
    yields the same batches an uninterrupted run would read next.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, ctx: distributed.DistributedContext,
                 num_workers: int = 0, memory_format: torch.memory_format = torch.contiguous_format):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = ctx.device
        self.memory_format = memory_format
        self.sampler = distributed.ResumableSampler(dataset, ctx, seed)
        if self.sampler.num_samples < batch_size:
            per_rank = f" ({self.sampler.num_samples} per process)" if ctx.enabled else ""
            raise DatasetError(f"the dataset has {len(dataset)} images{per_rank}, fewer than one batch of "
                               f"{batch_size}; lower batch_size or add images")
        # An own generator: creating an iterator must not consume the global RNG (exact resume).
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=num_workers, pin_memory=ctx.device.type == "cuda",
                                 generator=torch.Generator())
        self.epoch = 0
        self.batch = 0
        self._iterator = None

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def seek(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch, self._iterator = int(epoch), int(batch), None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(2):
            if self._iterator is None:
                self._start_epoch()
            try:
                item = next(self._iterator)
                break
            except StopIteration:
                self.epoch, self.batch, self._iterator = self.epoch + 1, 0, None
        self.batch += 1
        asynchronous = self.device.type == "cuda"  # pinned host memory: the copy overlaps the step
        images = item["image"].to(self.device, non_blocking=asynchronous, memory_format=self.memory_format)
        return images, item["labels"].to(self.device, non_blocking=asynchronous)

    def _start_epoch(self) -> None:
        self.sampler.set_position(self.epoch, self.batch * self.batch_size)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self._iterator = iter(self.loader)


# -- weights ---------------------------------------------------------------------------------------

def official_init(generator: torch.nn.Module, discriminator: torch.nn.Module) -> None:
    """The official code's initialisation (reference/lomit.md §3): every conv / linear weight of G
    Kaiming-normal (fan_in, a = 0), of D N(0, 0.02); all their biases 0; norm layers keep their defaults.

    It matters: with PyTorch's default init the un-normalised style encoder shrinks its input so much
    that style codes hardly depend on the image (std across images ~3e-4 for the tiny model, against
    ~7e-2 here), and a run then learns no exemplar style at all.
    """
    for module, init in ((generator, "kaiming"), (discriminator, "normal")):
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                if init == "kaiming":
                    torch.nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
                else:
                    torch.nn.init.normal_(layer.weight, 0.0, 0.02)
                if layer.bias is not None:
                    torch.nn.init.zeros_(layer.bias)


def state_checksum(*modules: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer: equal across ranks iff the replicas agree bit for bit."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


# -- sample grids ----------------------------------------------------------------------------------

def sample_grid(images: dict[str, torch.Tensor], gap: int = 2) -> torch.Tensor:
    """(3, H', W') in [0, 1]: one row per sample, columns input | exemplar | translation | both masks."""
    columns = []
    size = images["input"].shape[-2:]
    for name in ("input", "exemplar", "translation", "input_mask", "exemplar_mask"):
        t = images[name].detach().float().cpu()
        if name.endswith("mask"):
            t = torch.nn.functional.interpolate(t, size=size, mode="nearest").expand(-1, 3, -1, -1)
        else:
            t = (t + 1) / 2
        columns.append(t.clamp(0, 1))
    return tile_grid(columns, gap)


# -- the trainer -----------------------------------------------------------------------------------

class _Window:
    """Sums of loss terms since the last log, per group (D every iteration, G every n_critic)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, group: str, terms: dict[str, torch.Tensor]) -> None:
        self.counts[group] = self.counts.get(group, 0) + 1
        for name, value in terms.items():
            key = f"{group}/{name}"
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()

    def means(self) -> dict[str, float]:
        out = {key: float(total) / self.counts[key.split("/")[0]] for key, total in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return out


class Trainer:
    """Trains a LOMIT generator and discriminator as `config` says; `fit()` runs the loop."""

    def __init__(self, config: TrainConfig, resume: bool | str | os.PathLike | None = None):
        self.config = config.validate()
        self.run_dir = Path(config.run_dir)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.ctx = distributed.setup(config.device)
        try:
            self._build(resume)
        except BaseException:
            distributed.teardown(self.ctx)
            raise

    def _build(self, resume) -> None:
        cfg, device = self.config, self.ctx.device
        if cfg.amp == "fp16" and device.type != "cuda":
            raise ConfigError(f"amp = 'fp16' needs a CUDA device (this run uses {device}); "
                              "on the CPU use amp = 'bf16' or 'off'")
        self.model_config = cfg.model_config()
        self.dataset = build_dataset(cfg.data, self.model_config.image_size, cfg.seed)
        # One seed per rank: DDP copies rank 0's initial weights, the rest (GP's α) should differ.
        seed_everything(cfg.seed + self.ctx.rank)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.generator = LOMITGenerator(self.model_config).to(device, memory_format=layout).train()
        self.generator.set_backend(cfg.backend)
        self.discriminator = LOMITDiscriminator(self.model_config).to(device, memory_format=layout).train()
        if cfg.init == "official":
            official_init(self.generator, self.discriminator)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, cfg.lr_decay_every, cfg.lr_decay_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, cfg.lr_decay_every, cfg.lr_decay_gamma)
        fp16 = cfg.amp == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)
        self.g_objective = distributed.wrap(GeneratorObjective(self.generator, self.discriminator, cfg.loss), self.ctx)
        self.d_objective = distributed.wrap(DiscriminatorObjective(self.discriminator, cfg.loss), self.ctx)
        self.stream = BatchStream(self.dataset, cfg.batch_size, cfg.seed, self.ctx, cfg.data.num_workers, layout)
        self.step = 0
        self.checkpoint: Path | None = None
        self.seconds_per_iteration: float | None = None
        self._window = _Window()
        self._last_losses: dict[str, float] = {}
        self._samples: tuple[torch.Tensor, torch.Tensor] | None = None
        self._log_clock: tuple[float, int] | None = None   # (time, step) of the last log, for the speed
        if resume:
            self.resume_from(find_resume_checkpoint(resume, self.run_dir))

    # -- steps -------------------------------------------------------------------------------------
    def _autocast(self):
        if self.config.amp == "off":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.ctx.device.type, dtype=dtype)

    def critic_step(self, x_a, x_b, y_a, y_b) -> LossResult:
        """One D update on both translation directions."""
        with torch.no_grad(), self._autocast():
            fakes = translate_pair(self.generator, x_a, x_b)
        x_real = torch.cat([x_a, x_b])
        x_fake = torch.cat([fakes.x_ab, fakes.x_ba]).float()
        alpha = torch.rand(x_real.shape[0], 1, 1, 1, device=x_real.device)
        grad_scale = self.scaler_d.get_scale() if self.scaler_d.is_enabled() else None
        with self._autocast():
            result = self.d_objective(x_real, x_fake, torch.cat([y_a, y_b]), alpha, grad_scale)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(result.total).backward()
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        return result

    def generator_step(self, x_a, x_b, y_a, y_b) -> LossResult:
        """One G update; D is frozen so that no gradient (and no DDP hook) reaches it."""
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                result = self.g_objective(x_a, x_b, y_a, y_b)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(result.total).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        finally:
            self.discriminator.requires_grad_(True)
        return result

    def train_iteration(self) -> None:
        """Iteration `self.step`: D always, G when step % n_critic == 0, then the LR schedule."""
        cfg, i = self.config, self.step
        x_a, y_a = self.stream.next()
        x_b, y_b = self.stream.next()   # the exemplars come from the same loader
        self._window.add("D", self.critic_step(x_a, x_b, y_a, y_b).terms)
        if i % cfg.n_critic == 0:
            self._window.add("G", self.generator_step(x_a, x_b, y_a, y_b).terms)
        if i > cfg.lr_decay_start:
            self.sched_g.step()
            self.sched_d.step()
        self.step = i + 1

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, main = self.config, self.ctx.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / TRAIN_CONFIG_FILE)
            self._announce()
        writer = self._open_writer() if main and cfg.tensorboard else None
        bar = self._progress_bar()
        self._log_clock = (time.perf_counter(), self.step)
        try:
            end = run_iterations(self, cfg.iterations, bar, log_every=cfg.log_every, sample_every=cfg.sample_every,
                                 checkpoint_every=cfg.checkpoint_every, log=lambda: self._log(writer, bar),
                                 write_samples=(lambda: self._write_samples(writer)) if main else None,
                                 agree=lambda stop: distributed.any_rank(stop, self.ctx))
            if end.seconds_per_iteration is not None:
                self.seconds_per_iteration = end.seconds_per_iteration
            if main:
                self._write_summary(end.interrupted)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            distributed.teardown(self.ctx)
        return TrainResult(self.step, self.run_dir, self.checkpoint or latest_checkpoint(self.run_dir),
                           end.interrupted, dict(self._last_losses), self.seconds_per_iteration)

    def _announce(self) -> None:
        if not self.config.progress:
            return
        cfg, m = self.config, self.model_config
        processes = f", {self.ctx.world_size} processes" if self.ctx.enabled else ""
        print(f"lmt-train: {cfg.model_preset} model {m.image_size}x{m.image_size} "
              f"(G {count_parameters(self.generator):,} / D {count_parameters(self.discriminator):,} parameters), "
              f"{cfg.data.kind} data ({len(self.dataset)} images), batch {cfg.batch_size}+{cfg.batch_size}, "
              f"{self.ctx.device}{processes}, step {self.step}/{cfg.iterations}, run dir {self.run_dir}",
              file=sys.stderr)

    def _progress_bar(self):
        from tqdm import tqdm

        return tqdm(total=self.config.iterations, initial=self.step, unit="it", dynamic_ncols=True,
                    disable=not (self.config.progress and self.ctx.is_main), desc="train")

    def _open_writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package (pip install tensorboard), "
                              "or set tensorboard = false") from None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=self.step or None)

    def _log(self, writer, bar) -> None:
        """Window means of every term (averaged over ranks), LRs and speed; NaN stops the run."""
        losses = distributed.mean_over_ranks(self._window.means(), self.ctx)
        check_finite_losses(losses, self.step, self.run_dir)
        self._last_losses = losses
        if not self.ctx.is_main:
            return
        if writer is not None:
            for name, value in losses.items():
                writer.add_scalar(f"loss/{name}", value, self.step)
            writer.add_scalar("lr/G", self.opt_g.param_groups[0]["lr"], self.step)
            writer.add_scalar("lr/D", self.opt_d.param_groups[0]["lr"], self.step)
            now, since = time.perf_counter(), self._log_clock
            if since is not None and self.step > since[1]:
                writer.add_scalar("speed/seconds_per_iteration", (now - since[0]) / (self.step - since[1]), self.step)
            self._log_clock = (now, self.step)
        shown = {k: f"{losses[k]:.3g}" for k in ("D/total", "G/total") if k in losses}
        bar.set_postfix(shown, refresh=False)

    def _sample_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed inputs (items 0..n-1) and exemplars (the next n items) for every sample grid."""
        if self._samples is None:
            n, length = self.config.num_samples, len(self.dataset)
            items = [self.dataset[i % length]["image"] for i in range(2 * n)]
            stacked = torch.stack(items).to(self.ctx.device)
            self._samples = (stacked[:n], stacked[n:])
        return self._samples

    @torch.no_grad()
    def _write_samples(self, writer) -> None:
        x_in, x_ex = self._sample_batch()
        self.generator.eval()
        try:
            out = self.generator(x_in, x_ex)
        finally:
            self.generator.train()
        grid = sample_grid({"input": x_in, "exemplar": x_ex, "translation": out.image,
                            "input_mask": out.input_mask, "exemplar_mask": out.exemplar_mask})
        if writer is not None:
            writer.add_image("samples", grid, self.step)
        save_png(grid, self.run_dir / "samples" / f"step_{self.step:07d}.png")

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self, rng_states: list) -> dict[str, Any]:
        return {
            "step": self.step,
            "world_size": self.ctx.world_size,
            "data": self.stream.position(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "scheduler_g": self.sched_g.state_dict(),
            "scheduler_d": self.sched_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": rng_states,
        }

    def save(self) -> Path:
        """Write checkpoints/step_N (G + D + trainer state), the root generator and `latest` (all ranks call)."""
        rng_states = distributed.gather_objects(capture_rng_state(self.ctx.device), self.ctx)
        distributed.broadcast_buffers(self.generator, self.ctx)
        distributed.broadcast_buffers(self.discriminator, self.ctx)
        self._checksums = distributed.gather_objects(state_checksum(self.generator, self.discriminator), self.ctx)
        path = checkpoint_dir(self.run_dir, self.step)
        if self.ctx.is_main:
            extra = {"step": self.step, "train_config": self.config.to_dict(), "trainer": "lmt_train"}
            save_checkpoint(self.generator, path, discriminator=self.discriminator, extra=extra)
            save_trainer_state(path / STATE_FILE, self.state_dict(rng_states))
            # The run directory itself always holds the newest generator: Translator.load(run_dir).
            save_checkpoint(self.generator, self.run_dir, extra={**extra, "checkpoint": path.name})
            write_latest(self.run_dir, path)
            prune_checkpoints(self.run_dir, self.config.keep_last, protect=path)
        distributed.barrier(self.ctx)
        self.checkpoint = path
        return path

    def resume_from(self, path: Path) -> None:
        """Restore weights, optimisers, schedulers, scalers, data position and RNG from a checkpoint."""
        state = load_trainer_state(path / STATE_FILE)
        restore_weights(path, load_checkpoint, self.model_config, self.generator, self.discriminator)
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.sched_g.load_state_dict(state["scheduler_g"])
        self.sched_d.load_state_dict(state["scheduler_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])
        self.step = int(state["step"])
        self.stream.seek(**state["data"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            restore_rng_state(rng[self.ctx.rank], self.ctx.device)
        else:
            warnings.warn(f"{path} was saved by {len(rng)} process(es), this run has {self.ctx.world_size}: "
                          "random streams are re-seeded, so the run continues but not bit-exactly")
            seed_everything(self.config.seed + self.ctx.rank + 7919 * self.step)
        self.checkpoint = path

    def _write_summary(self, interrupted: bool) -> None:
        checksums = getattr(self, "_checksums", None)
        summary = {
            "step": self.step,
            "iterations": self.config.iterations,
            "interrupted": interrupted,
            "world_size": self.ctx.world_size,
            "device": str(self.ctx.device),
            "seconds_per_iteration": self.seconds_per_iteration,
            "losses": self._last_losses,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "replica_checksums": checksums,
            "replicas_identical": None if checksums is None else len(set(checksums)) == 1,
        }
        (self.run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
