"""Networks trained on synthetic eyes only: the pupil-centre regressor and a pupil segmenter.

* ``PupilRegressor``: CNN -> (x, y) of the pupil centre in [-1, 1] image coordinates. Trained on
  synthetic images and then frozen, it is the "task" of MGST's task-guided loss (its prediction on the
  purified image must match the label) and, with another seed and width, the evaluation's gaze proxy.
* ``PupilSegmenter``: a small fully convolutional net -> pupil probability per pixel; the benchmark's
  "simple segmenter" for geometry preservation (pupil IoU before / after purification).

Both are trained on clean synthetic eyes with no augmentation: the setting in which purification of real
images matters (a regressor trained on augmented or real data would need less of it).

Checkpoints use lmt_fast's format (safetensors + JSON header, atomic writes) with model kind
"pupil_regressor" / "pupil_segmenter".
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmt_train.mgst.config import RegressorConfig, validate_regressor

KINDS = {"regressor": "pupil_regressor", "segmenter": "pupil_segmenter"}


class PupilRegressor(nn.Module):
    """conv-ReLU-pool x3 (w, 2w, 4w), conv 4w, global layout kept by a flatten, MLP -> (x, y) in [-1, 1]."""

    def __init__(self, width: int = 16, image_size=(36, 60)):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(),
        )
        h, wd = image_size[0] // 8, image_size[1] // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * h * wd, 128), nn.ReLU(), nn.Linear(128, 2))
        self.image_size = tuple(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PupilSegmenter(nn.Module):
    """Dilated 3x3 convs at full resolution -> one logit per pixel (pupil)."""

    def __init__(self, width: int = 16, image_size=(36, 60)):
        super().__init__()
        w = width
        layers, cin = [], 3
        for dilation in (1, 2, 4, 2, 1):
            layers += [nn.Conv2d(cin, w, 3, padding=dilation, dilation=dilation), nn.ReLU()]
            cin = w
        self.body = nn.Sequential(*layers, nn.Conv2d(w, 1, 1))
        self.image_size = tuple(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build(kind: str, width: int, image_size) -> nn.Module:
    return (PupilRegressor if kind == "regressor" else PupilSegmenter)(width, image_size)


# -- checkpoints -----------------------------------------------------------------------------------

def save_network(module: nn.Module, kind: str, path: str | os.PathLike, config: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> Path:
    """A directory with config.json + model.safetensors (lmt_fast's checkpoint format)."""
    from lmt_fast.io import write_checkpoint

    return write_checkpoint(Path(path), KINDS[kind], config, {"network.": module}, extra)


def load_network(path: str | os.PathLike, kind: str = "regressor") -> nn.Module:
    """A network written by `save_network`, in eval mode with gradients off; errors are CheckpointError."""
    from lmt_fast.io import load_state, read_header, read_tensors

    header, weights = read_header(path, KINDS[kind])
    cfg = header["config"]
    module = build(kind, int(cfg["width"]), tuple(cfg["image_size"]))
    load_state(module, read_tensors(weights, path, ("network.",)), "network.", path)
    module.eval().requires_grad_(False)
    module.header = header
    return module


# -- training --------------------------------------------------------------------------------------

def pixel_error(pred: torch.Tensor, centre_px: torch.Tensor, size) -> torch.Tensor:
    """Euclidean error in pixels of normalised predictions (N, 2) against pixel labels (N, 2)."""
    from lmt_train.data.eyes import denormalise_centre

    return (denormalise_centre(pred.float(), size) - centre_px.float()).norm(dim=1)


def train_network(cfg: RegressorConfig, out: str | os.PathLike, image_size=(36, 60), progress: bool = True,
                  threads: int | None = 1, data_seed: int = 20_000, eval_count: int = 500
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Train a regressor / segmenter on synthetic eyes (split train), report on `eval_count` test eyes
    (both renderings), save to `out` and return (network, report). Deterministic for a given config (CPU)."""
    from tqdm import tqdm

    from lmt_train.data.eyes import SyntheticEyes, normalise_centre

    validate_regressor(cfg)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    net = build(cfg.kind, cfg.width, image_size)
    data = SyntheticEyes(cfg.synthetic_length, seed=data_seed + cfg.seed, split="train", size=image_size,
                         rendering="synthetic")
    items = [data[i] for i in range(len(data))]
    images = torch.stack([it["image"] for it in items])
    targets = (normalise_centre(torch.stack([it["pupil_centre"] for it in items]), image_size)
               if cfg.kind == "regressor" else torch.stack([it["pupil_mask"] for it in items]))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.iterations)
    rng = np.random.default_rng(cfg.seed)
    started = time.perf_counter()
    bar = tqdm(range(cfg.iterations), desc=f"train {cfg.kind}", unit="it", disable=not progress, file=sys.stderr)
    net.train()
    for _ in bar:
        idx = torch.from_numpy(rng.integers(0, len(items), cfg.batch_size))
        out_ = net(images[idx])
        if cfg.kind == "regressor":
            loss = F.smooth_l1_loss(out_, targets[idx], beta=0.02)
        else:
            loss = F.binary_cross_entropy_with_logits(out_, targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
    seconds = time.perf_counter() - started
    net.eval().requires_grad_(False)
    report = {"kind": cfg.kind, "train_seconds": round(seconds, 1), "iterations": cfg.iterations,
              **evaluate_on_synthetic(net, cfg.kind, image_size, eval_count)}
    save_network(net, cfg.kind, out, {"width": cfg.width, "image_size": list(image_size)},
                 extra={"train_config": vars(cfg), "data_seed": data_seed + cfg.seed, "report": report})
    return net, report


@torch.no_grad()
def evaluate_on_synthetic(net: nn.Module, kind: str, image_size, count: int = 500) -> dict[str, float]:
    from lmt_train.data.eyes import SyntheticEyes

    test = SyntheticEyes(count, seed=0, split="test", size=image_size, rendering="both", cache=False)
    items = [test[i] for i in range(count)]
    result = {}
    for rendering in ("synthetic", "real"):
        x = torch.stack([it[rendering] for it in items])
        if kind == "regressor":
            err = pixel_error(net(x), torch.stack([it["pupil_centre"] for it in items]), image_size)
            result[f"{rendering}_error_px"] = round(float(err.mean()), 3)
        else:
            pred = net(x) > 0
            gt = torch.stack([it["pupil_mask"] for it in items]) > 0.5
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float().clamp(min=1)
            result[f"{rendering}_pupil_iou"] = round(float((inter / union).mean()), 3)
    return result
