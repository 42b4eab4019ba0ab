"""Training configuration: typed dataclasses loaded from TOML / JSON plus `key=value` overrides.

The defaults are the official LOMIT training setup (reference/lomit.md §4.5): Adam 1e-4 with betas
(0.5, 0.999), batch 8 inputs + 8 exemplars, n_critic 5, 200k iterations, the LR halved every 10k iterations
after 100k, and the final loss weights of config_celebA.yaml.

A config file mirrors the dataclasses: top-level keys, and the tables [data], [loss] and [model]
(LOMITConfig fields that override the preset named by `model_preset`). Overrides use dotted keys:

    load_config("configs/tiny_synthetic.toml", ["lr=2e-4", "model.base_dim=16", "data.kind=celeba"])

An override's value is read as a TOML value when it parses as one (numbers, booleans, lists, quoted
strings) and as a plain string otherwise; lists may also be written comma-separated (a,b,c).
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lmt_fast.models import DEFAULT_ATTRIBUTES, LOMITConfig

DATASET_KINDS = ("synthetic", "celeba", "folder")
AMP_MODES = ("off", "bf16", "fp16")
MODEL_PRESETS = ("paper", "tiny")
INIT_SCHEMES = ("official", "pytorch")
SPLITS = ("train", "test", "all")
# Model fields that describe the data; they are set in [data] so that data and model cannot disagree.
DATA_OWNED_MODEL_FIELDS = {"image_size": "data.image_size", "attributes": "data.attributes"}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


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
    model: dict[str, Any] = field(default_factory=dict)  # LOMITConfig fields overriding the preset
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
        _choice("data.kind", self.data.kind, DATASET_KINDS)
        _choice("data.split", self.data.split, SPLITS)
        _choice("amp", self.amp, AMP_MODES)
        _choice("model_preset", self.model_preset, MODEL_PRESETS)
        _choice("init", self.init, INIT_SCHEMES)
        from lmt_fast import ops

        _choice("backend", self.backend, ["auto", *ops.available_backends()])
        for key in ("iterations", "batch_size", "n_critic", "lr_decay_every", "log_every", "sample_every",
                    "checkpoint_every", "num_samples"):
            _at_least(key, getattr(self, key), 1)
        for key in ("seed", "lr_decay_start", "keep_last"):
            _at_least(key, getattr(self, key), 0)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must lie in [0, 1), got {self.betas}")
        if not 0 < self.lr_decay_gamma <= 1:
            raise ConfigError(f"lr_decay_gamma must lie in (0, 1], got {self.lr_decay_gamma}")
        _at_least("data.synthetic_length", self.data.synthetic_length, 1)
        _at_least("data.num_workers", self.data.num_workers, 0)
        _at_least("data.test_rows", self.data.test_rows, 0)
        if self.data.crop is not None:
            _at_least("data.crop", self.data.crop, 1)
        if not self.data.attributes:
            raise ConfigError("data.attributes must name at least one attribute")
        if self.data.kind in ("celeba", "folder") and not self.data.path:
            raise ConfigError(f"data.path is required for data.kind = {self.data.kind!r} "
                              "(--data-path DIR or --set data.path=DIR)")
        for name, value in vars(self.loss).items():
            if value < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {value}")
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
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return _build(cls, values, "").validate()


# -- loading ---------------------------------------------------------------------------------------

def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> TrainConfig:
    """TrainConfig from `base` (a dict), then a TOML/JSON file, then `key=value` overrides."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values = _merge(values, read_config_file(path))
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(values, key, value)
    return TrainConfig.from_dict(values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        elif path.suffix.lower() == ".toml":
            values = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a table / object at the top level")
    return values


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', parsed value)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. lr=2e-4 or model.base_dim=16)")
    try:
        return key, tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, text.strip()  # a bare word: a string such as tiny, off, /data/celeba


def save_config(config: TrainConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(values: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    target = values
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a table")
        target = child
    target[last] = value


# -- typed construction ----------------------------------------------------------------------------

def _build(cls, values: Any, prefix: str):
    """Instantiate dataclass `cls` from a dict, converting each value to its field's type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)} "
                          f"(known: {', '.join(sorted(prefix + f for f in fields))})")
    kwargs = {name: _convert(hints[name], value, prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def _convert(hint, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if hint is bool:
        return _to_bool(value, key)
    if hint is int:
        return _to_int(value, key)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin is tuple:
        items = _to_list(value, key)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, key) for v in items)
        if len(items) != len(args):
            raise ConfigError(f"{key} must have {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, key) for a, v in zip(args, items))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return dict(value) if key != "model" else _model_overrides(value)
    return value


def _model_overrides(values: dict) -> dict:
    """[model] values converted to LOMITConfig's field types (unknown keys are reported by validate)."""
    hints = typing.get_type_hints(LOMITConfig)
    return {name: _convert(hints[name], value, f"model.{name}") if name in hints else value
            for name, value in values.items()}


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # 2e5 written as a float
        return int(value)
    raise ConfigError(f"{key} must be an integer, got {value!r}")


def _to_list(value: Any, key: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    raise ConfigError(f"{key} must be a list, got {value!r}")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict is JSON / TOML friendly."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")
