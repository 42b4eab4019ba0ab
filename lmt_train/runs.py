"""What every training run shares, LOMIT (lmt_train.trainer) or MGST (lmt_train.mgst.trainer).

The run directory's layout (checkpoints/step_N, the `latest` pointer, train_config.json, summary.json),
checkpoint rotation and resume, the resumable trainer state (safetensors + a JSON skeleton; no pickle),
RNG states, the iteration loop with its intervals and stopping on signals, the loss check of every log
and sample PNGs.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmt_fast.io import CheckpointError

STATE_FILE = "trainer_state.safetensors"
STATE_FORMAT = "lmt_train.trainer_state"
STATE_VERSION = 1
METADATA_KEY = "lmt_train"
LATEST_FILE = "latest"
TRAIN_CONFIG_FILE = "train_config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class TrainingError(RuntimeError):
    """A run that cannot start or continue (nothing to resume, a mismatched checkpoint, NaN losses)."""


# -- trainer state: nested dicts of tensors <-> safetensors + JSON -----------------------------------

def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """A JSON skeleton of `obj`; its tensors / arrays go into `tensors` under path-like keys.

    Every skeleton node is a one-key dict naming its kind, so dict keys (ints in optimiser states),
    tuples (betas) and numpy arrays (RNG states) come back as they were.
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"tensor": key}
    if isinstance(obj, np.ndarray):
        # safetensors has no unsigned 32-bit type: integers travel as int64, the dtype in the skeleton.
        stored = obj.astype(np.int64) if obj.dtype.kind in "ui" else obj
        tensors[key] = torch.from_numpy(np.ascontiguousarray(stored)).clone()
        return {"ndarray": key, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        return {"dict": [[k, flatten_state(v, tensors, f"{key}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{key}/{i}") for i, v in enumerate(obj)]
        return {"tuple" if isinstance(obj, tuple) else "list": items}
    if isinstance(obj, np.generic):
        return {"value": obj.item()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"cannot store {type(obj).__name__} at {key} in a trainer state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    (kind, value), *rest = skeleton.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "ndarray":
        return tensors[value].numpy().astype(skeleton["dtype"])
    if kind == "dict":
        return {k: unflatten_state(v, tensors) for k, v in value}
    if kind == "list":
        return [unflatten_state(v, tensors) for v in value]
    if kind == "tuple":
        return tuple(unflatten_state(v, tensors) for v in value)
    return value


def save_trainer_state(path: Path, state: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, tensors, "state")
    header = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "state": skeleton}
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(header)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_trainer_state(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    if not path.is_file():
        raise TrainingError(f"cannot resume: {path} is missing (not a trainer checkpoint)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = json.loads((f.metadata() or {})[METADATA_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors / JSON errors of a damaged file
        raise TrainingError(f"cannot resume: {path} is not a readable trainer state ({exc})") from None
    if header.get("format") != STATE_FORMAT or not isinstance(header.get("format_version"), int):
        raise TrainingError(f"cannot resume: {path} is not an lmt_train trainer state")
    if header["format_version"] > STATE_VERSION:
        raise TrainingError(f"cannot resume: {path} has trainer-state version {header['format_version']}, "
                            f"newer than this lmt_train supports ({STATE_VERSION})")
    return unflatten_state(header["state"], tensors)


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- run directory ---------------------------------------------------------------------------------

def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step_{step:07d}"


def write_latest(run_dir: Path, checkpoint: Path) -> None:
    target = run_dir / LATEST_FILE
    tmp = target.with_name(LATEST_FILE + ".tmp")
    tmp.write_text(checkpoint.relative_to(run_dir).as_posix() + "\n")
    os.replace(tmp, target)


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / LATEST_FILE
    if not pointer.is_file():
        return None
    return run_dir / pointer.read_text().strip()


def find_resume_checkpoint(resume: bool | str | os.PathLike, run_dir: Path) -> Path:
    """The checkpoint directory to resume from: the run directory's latest, or a given run/checkpoint."""
    path = run_dir if resume is True or resume == "latest" else Path(resume)
    if not path.exists():
        raise TrainingError(f"cannot resume: {path} does not exist")
    if (path / LATEST_FILE).is_file():
        path = latest_checkpoint(path)
    elif not (path / STATE_FILE).is_file():
        raise TrainingError(f"cannot resume: no checkpoint in {path} (no '{LATEST_FILE}' file and no {STATE_FILE})")
    if not (path / STATE_FILE).is_file():
        raise TrainingError(f"cannot resume: {path} holds no {STATE_FILE}")
    return path


def prune_checkpoints(run_dir: Path, keep_last: int, protect: Path) -> None:
    """Delete all but the newest `keep_last` step directories (never `protect`)."""
    if keep_last <= 0:
        return
    found = []
    for child in (run_dir / CHECKPOINT_DIR).iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    for _, old in sorted(found)[:-keep_last]:
        if old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)


def restore_weights(path: Path, load: Callable, model_config, generator: torch.nn.Module,
                    discriminator: torch.nn.Module) -> None:
    """Load G and D from the checkpoint at `path` (read by `load`, e.g. lmt_fast.io.load_checkpoint) into
    a run's modules; a checkpoint of another model config cannot be resumed."""
    try:
        saved = load(path, device="cpu", discriminator=True)
    except CheckpointError as exc:
        raise TrainingError(f"cannot resume: {exc}") from None
    ours, theirs = model_config.to_dict(), saved.config.to_dict()
    differ = sorted(k for k in ours if k != "extra" and ours[k] != theirs.get(k))
    if differ:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours[k]!r} here" for k in differ)
        raise TrainingError(f"cannot resume from {path}: the model config differs ({detail})")
    generator.load_state_dict(saved.generator.state_dict())
    discriminator.load_state_dict(saved.discriminator.state_dict())


def check_finite_losses(losses: dict[str, float], step: int, run_dir: Path) -> None:
    """A NaN or infinite loss stops the run, naming the checkpoint to go back to."""
    bad = sorted(name for name, value in losses.items() if not np.isfinite(value))
    if bad:
        raise TrainingError(f"non-finite loss ({', '.join(bad)}) by step {step}; "
                            f"last checkpoint: {latest_checkpoint(run_dir) or 'none'}")


# -- sample PNGs -----------------------------------------------------------------------------------

def tile_grid(columns: list[torch.Tensor], gap: int = 2) -> torch.Tensor:
    """(3, H', W') on white: row i holds tile i of every column; columns are (N, 3, h, w) in [0, 1]."""
    n, _, h, w = columns[0].shape
    grid = torch.ones(3, n * (h + gap) - gap, len(columns) * (w + gap) - gap)
    for row in range(n):
        for col, tiles in enumerate(columns):
            top, left = row * (h + gap), col * (w + gap)
            grid[:, top:top + h, left:left + w] = tiles[row]
    return grid


def save_png(grid: torch.Tensor, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


# -- stopping on signals ---------------------------------------------------------------------------

class StopSignals:
    """SIGINT / SIGTERM ask the loop to save and stop after the current iteration; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.requested = signum


# -- the loop --------------------------------------------------------------------------------------

@dataclass
class LoopEnd:
    interrupted: bool                      # stopped by SIGINT / SIGTERM (after saving)
    seconds_per_iteration: float | None    # None when no iteration ran
    seconds: float                         # wall time of the loop


def run_iterations(trainer, iterations: int, bar, *, log_every: int, sample_every: int, checkpoint_every: int,
                   log: Callable[[], None], write_samples: Callable[[], None] | None,
                   agree: Callable[[bool], bool] = bool) -> LoopEnd:
    """Call `trainer.train_iteration()` until `trainer.step` reaches `iterations`, with `log`, `write_samples`
    (None: not on this process) and `trainer.save()` at their intervals and at the last step.

    A stop signal saves and ends the loop after the current iteration; `agree` turns this process's
    request into every process's decision (distributed runs must save and stop together).
    """
    started, start_step = time.perf_counter(), trainer.step
    interrupted = False
    with StopSignals() as signals:
        while trainer.step < iterations:
            trainer.train_iteration()
            bar.update(1)
            last = trainer.step == iterations
            if trainer.step % log_every == 0 or last:
                log()
            if write_samples is not None and (trainer.step % sample_every == 0 or last):
                write_samples()
            stop = agree(signals.requested is not None)
            if stop or trainer.step % checkpoint_every == 0 or last:
                trainer.save()
            if stop:
                interrupted = True
                break
    seconds = time.perf_counter() - started
    done = trainer.step - start_step
    return LoopEnd(interrupted, seconds / done if done else None, seconds)
