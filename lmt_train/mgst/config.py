"""MGST training configuration: dataclasses with defaults, loaded from TOML / JSON plus `key=value` overrides.

A config file mirrors the dataclasses: top-level keys and the tables [model] (MGSTConfig fields), [data],
[loss] and [regressor]. Overrides use dotted keys, as for LOMIT (lmt_train.config_utils):

    load_mgst_config("configs/mgst_small.toml", ["iterations=100", "model.mask_mode=global"])

None of these values comes from the MGST paper (its body could not be read; reference/mgst.md §0): the
defaults are the CPU-sized recipe of lmt_fast/assets/mgst/README.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lmt_fast.models.mgst import MGSTConfig
from lmt_train.config_utils import (
    ConfigError, at_least, build_dataclass, check_backend, check_betas, check_loss_weights, choice, load_values, plain,
)

DATA_KINDS = ("synthetic", "folder")
FEATURES = ("random",)


@dataclass
class MGSTDataConfig:
    kind: str = "synthetic"            # synthetic: procedural "real" eyes; folder: lmt_train.data.eye_folder layout
    path: str | None = None            # folder: the root with images/, masks/, labels.csv
    real_length: int = 4000            # synthetic: "real" training images (labelled: the task loss uses them)
    synthetic_length: int = 4000       # synthetic-domain images (style targets, adversarial reals); unpaired
    cache: bool = True                 # keep rendered images in memory


@dataclass
class MGSTLossWeights:
    """λ of every generator term; see lmt_train.mgst.losses for the formulas."""

    content_full: float = 1.0          # random-feature content, whole image
    content_att: float = 1.0           # the same on the attention region only
    style_att: float = 1.0             # region moments (pixels + random features), attention region
    style_bkgd: float = 1.0            # the same, background region
    adv: float = 0.05                  # LSGAN toward the synthetic domain
    task: float = 0.05                 # frozen pupil regressor on the purified image vs the label (pixels²)
    tv: float = 0.0                    # total variation of the purified image (synthetic eyes are flat)
    region_losses: bool = True         # False: content_att / style terms see an all-ones mask too
    features: str = "random"           # the loss network Φ: a fixed random conv net (see features.py)
    feature_seed: int = 1234
    feature_width: int = 16


@dataclass
class RegressorConfig:
    """The pupil-centre regressor (and the pupil segmenter) trained on synthetic eyes only."""

    kind: str = "regressor"            # regressor | segmenter
    width: int = 16
    iterations: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    synthetic_length: int = 6000


@dataclass
class MGSTTrainConfig:
    run_dir: str = "runs/mgst"
    seed: int = 0
    iterations: int = 2000
    batch_size: int = 16
    lr: float = 2e-4                   # generator
    lr_d: float = 2e-4                 # discriminator
    betas: tuple[float, float] = (0.5, 0.999)
    stored_style_prob: float = 0.5     # share of steps that use the stored (EMA) style instead of a style image
    style_momentum: float = 0.98       # EMA of the synthetic-domain style during training
    calibration_images: int = 512      # synthetic images whose mean region style is stored at each save
    regressor: str | None = None       # a trained task regressor; None: train one into <run_dir>/regressor
    validation_images: int = 200       # held-out "real" eyes whose pupil error is checked at each save (0: off)
    device: str = "cpu"
    backend: str = "auto"              # lmt_fast op backend of the generator (auto, reference, cpu, ...)
    threads: int | None = 1
    log_every: int = 20
    sample_every: int = 250
    checkpoint_every: int = 250
    keep_last: int = 2
    num_samples: int = 8
    progress: bool = True
    model: MGSTConfig = field(default_factory=MGSTConfig)
    data: MGSTDataConfig = field(default_factory=MGSTDataConfig)
    loss: MGSTLossWeights = field(default_factory=MGSTLossWeights)
    task_regressor: RegressorConfig = field(default_factory=RegressorConfig)

    def validate(self) -> "MGSTTrainConfig":
        choice("data.kind", self.data.kind, DATA_KINDS)
        choice("loss.features", self.loss.features, FEATURES)
        choice("task_regressor.kind", self.task_regressor.kind, ("regressor",))
        check_backend(self.backend)
        for key in ("iterations", "batch_size", "log_every", "sample_every", "checkpoint_every", "num_samples",
                    "calibration_images"):
            at_least(key, getattr(self, key), 1)
        for key in ("seed", "keep_last", "validation_images"):
            at_least(key, getattr(self, key), 0)
        for key in ("real_length", "synthetic_length"):
            at_least(f"data.{key}", getattr(self.data, key), 1)
        if self.threads is not None:
            at_least("threads", self.threads, 1)
        for key in ("lr", "lr_d"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)}")
        check_betas(self.betas)
        if not 0 <= self.stored_style_prob <= 1:
            raise ConfigError(f"stored_style_prob must lie in [0, 1], got {self.stored_style_prob}")
        if not 0 <= self.style_momentum < 1:
            raise ConfigError(f"style_momentum must lie in [0, 1), got {self.style_momentum}")
        check_loss_weights(self.loss)
        if self.data.kind == "folder" and not self.data.path:
            raise ConfigError("data.path is required for data.kind = 'folder' (--set data.path=DIR)")
        validate_regressor(self.task_regressor, "task_regressor.")
        return self

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MGSTTrainConfig":
        try:
            return build_dataclass(cls, values).validate()
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"invalid config: {exc}") from None


def validate_regressor(cfg: RegressorConfig, prefix: str = "") -> RegressorConfig:
    choice(prefix + "kind", cfg.kind, ("regressor", "segmenter"))
    for key in ("width", "iterations", "batch_size", "synthetic_length"):
        at_least(prefix + key, getattr(cfg, key), 1)
    if cfg.lr <= 0:
        raise ConfigError(f"{prefix}lr must be > 0, got {cfg.lr}")
    return cfg


def load_mgst_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                     base: dict[str, Any] | None = None) -> MGSTTrainConfig:
    """MGSTTrainConfig from `base` (a dict), then a TOML/JSON file, then `key=value` overrides."""
    return MGSTTrainConfig.from_dict(load_values(path, overrides, base))
