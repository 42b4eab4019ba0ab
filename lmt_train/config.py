"""Training configuration: typed dataclasses loaded from TOML / JSON plus `key=value` overrides.

The defaults are the official LOMIT training setup (reference/lomit.md §4.5): Adam 1e-4 with betas
(0.5, 0.999), batch 8 inputs + 8 exemplars, n_critic 5, 200k iterations, the LR halved every 10k iterations
after 100k, and the final loss weights of config_celebA.yaml.

A config file mirrors the dataclasses: top-level keys, and the tables [data], [loss] and [model]
(LOMITConfig fields that override the preset named by `model_preset`). Overrides use dotted keys:

    load_config("configs/tiny_synthetic.toml", ["lr=2e-4", "model.base_dim=16", "data.kind=celeba"])

Reading, overriding and typing the values is lmt_train.config_utils, shared with the MGST config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lmt_fast.models import DEFAULT_ATTRIBUTES, LOMITConfig
from lmt_train.config_utils import (
    FIELDS_OF, ConfigError, at_least, build_dataclass, check_backend, check_betas, check_loss_weights, choice,
    load_values, parse_override, plain, read_config_file, save_config,
)

__all__ = [
    "AMP_MODES", "DATASET_KINDS", "DATA_OWNED_MODEL_FIELDS", "INIT_SCHEMES", "MODEL_PRESETS", "SPLITS",
    "ConfigError", "DataConfig", "LossWeights", "TrainConfig",
    "load_config", "parse_override", "read_config_file", "save_config",
]

DATASET_KINDS = ("synthetic", "celeba", "folder")
AMP_MODES = ("off", "bf16", "fp16")
MODEL_PRESETS = ("paper", "tiny")
INIT_SCHEMES = ("official", "pytorch")
SPLITS = ("train", "test", "all")
# Model fields that describe the data; they are set in [data] so that data and model cannot disagree.
DATA_OWNED_MODEL_FIELDS = {"image_size": "data.image_size", "attributes": "data.attributes"}


@dataclass
class DataConfig:
    kind: str = "synthetic"            # synthetic | celeba | folder
    path: str | None = None            # celeba: dataset root; folder: the image folder
    csv: str | None = None             # folder: attribute CSV (default: <path>/attributes.csv)
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    image_size: int | None = None      # None: the model preset's size
    crop: int | None = None            # centre-crop side before resizing; None: 178 (celeba) / largest square
    flip: bool = True                  # random horizontal flips of training images (celeba, folder)
    hair_filter: bool = True           # celeba: keep only images with one of the selected hair colours
    test_rows: int = 1999              # celeba: the official split puts the first 1999 rows in test
    split: str = "train"               # train | test | all (celeba; the others have one split)
    synthetic_length: int = 10000      # synthetic: images per epoch
    cache: bool = True                 # synthetic: keep rendered images in memory (uint8)
    num_workers: int = 0               # DataLoader worker processes


@dataclass
class LossWeights:
    """λ of every term (reference/lomit.md §4.2, §4.4); the adversarial terms have weight 1."""

    gp: float = 10.0
    cls: float = 1.0
    x_rec: float = 10.0
    x_cyc: float = 10.0
    c: float = 1.0
    s_f: float = 1.0
    s_b: float = 1.0
    mask_min: float = 1e-4
    mask_sim: float = 0.1
    mask_smooth: float = 0.0
    style_reg: float = 0.0


@dataclass
class TrainConfig:
    run_dir: str = "runs/lomit"
    seed: int = 0
    iterations: int = 200_000
    batch_size: int = 8                # inputs per process; as many exemplars are drawn from the same loader
    lr: float = 1e-4                   # both G and D
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 5                  # D every iteration, G when iteration % n_critic == 0
    lr_decay_start: int = 100_000      # StepLR is stepped once per iteration after this one
    lr_decay_every: int = 10_000
    lr_decay_gamma: float = 0.5
    amp: str = "off"                   # off | bf16 | fp16 (fp16 needs a GPU)
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    backend: str = "auto"              # lmt_fast op backend of the generator's normalisations (auto, reference, cpu, ...)
    channels_last: bool = True         # NHWC activations: faster convolutions on CPUs and tensor cores
    threads: int | None = None         # torch.set_num_threads; None leaves torch's default
    log_every: int = 100               # TensorBoard scalars and the progress bar's losses
    sample_every: int = 2000           # TensorBoard image grids (and samples/step_*.png)
    num_samples: int = 6               # rows of the sample grid
    checkpoint_every: int = 10_000
    keep_last: int = 3                 # checkpoints kept (0 keeps all)
    progress: bool = True
    tensorboard: bool = True
    model_preset: str = "paper"        # paper | tiny (LOMITConfig.paper() / .tiny())
    init: str = "official"             # official (G Kaiming-normal, D N(0, 0.02), zero biases) | pytorch
    model: dict[str, Any] = field(default_factory=dict,  # LOMITConfig fields overriding the preset
                                  metadata={FIELDS_OF: LOMITConfig})
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    # -- derived ----------------------------------------------------------------------------------
    def model_config(self) -> LOMITConfig:
        """The LOMITConfig this run trains: preset + [model] overrides + the data's size and attributes."""
        preset = LOMITConfig.tiny if self.model_preset == "tiny" else LOMITConfig.paper
        values = dict(self.model)
        values["attributes"] = tuple(self.data.attributes)
        if self.data.image_size is not None:
            values["image_size"] = self.data.image_size
        try:
            config = preset(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid model config: {exc}") from None
        final = config.image_size // 2 ** config.d_layers
        if final < 2:  # the critic head reflect-pads its input by 1, which needs at least 2x2
            fits = max(d for d in range(1, config.d_layers + 1) if config.image_size // 2 ** d >= 2)
            raise ConfigError(f"invalid model config: image size {config.image_size} with d_layers = "
                              f"{config.d_layers} leaves a {final}x{final} discriminator map (needs >= 2x2); "
                              f"set model.d_layers = {fits} or a larger data.image_size")
        return config

    def validate(self) -> "TrainConfig":
        choice("data.kind", self.data.kind, DATASET_KINDS)
        choice("data.split", self.data.split, SPLITS)
        choice("amp", self.amp, AMP_MODES)
        choice("model_preset", self.model_preset, MODEL_PRESETS)
        choice("init", self.init, INIT_SCHEMES)
        check_backend(self.backend)
        for key in ("iterations", "batch_size", "n_critic", "lr_decay_every", "log_every", "sample_every",
                    "checkpoint_every", "num_samples"):
            at_least(key, getattr(self, key), 1)
        for key in ("seed", "lr_decay_start", "keep_last"):
            at_least(key, getattr(self, key), 0)
        if self.threads is not None:
            at_least("threads", self.threads, 1)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        check_betas(self.betas)
        if not 0 < self.lr_decay_gamma <= 1:
            raise ConfigError(f"lr_decay_gamma must lie in (0, 1], got {self.lr_decay_gamma}")
        at_least("data.synthetic_length", self.data.synthetic_length, 1)
        at_least("data.num_workers", self.data.num_workers, 0)
        at_least("data.test_rows", self.data.test_rows, 0)
        if self.data.crop is not None:
            at_least("data.crop", self.data.crop, 1)
        if not self.data.attributes:
            raise ConfigError("data.attributes must name at least one attribute")
        if self.data.kind in ("celeba", "folder") and not self.data.path:
            raise ConfigError(f"data.path is required for data.kind = {self.data.kind!r} "
                              "(--data-path DIR or --set data.path=DIR)")
        check_loss_weights(self.loss)
        for name, where in DATA_OWNED_MODEL_FIELDS.items():
            if name in self.model:
                raise ConfigError(f"model.{name} is set through {where}")
        unknown = sorted(set(self.model) - {f.name for f in dataclasses.fields(LOMITConfig)})
        if unknown:
            raise ConfigError(f"unknown model key(s): {', '.join('model.' + k for k in unknown)}")
        self.model_config()
        return self

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return build_dataclass(cls, values).validate()


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig from `base` (a dict), then a TOML/JSON file, then `key=value` overrides."""
    return TrainConfig.from_dict(load_values(path, overrides, base))
