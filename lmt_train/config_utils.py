"""Typed training configs from TOML / JSON files plus dotted `key=value` overrides.

The machinery both trainers' configs share (lmt_train.config for LOMIT, lmt_train.mgst.config for MGST):
raw values are merged from a base dict, a file and overrides (`load_values`), then turned into nested
dataclasses with every value converted to its field's type (`build_dataclass`); the checks used by their
`validate` methods raise ConfigError naming the key.

An override's value is read as a TOML value when it parses as one (numbers, booleans, lists, quoted
strings) and as a plain string otherwise; lists may also be written comma-separated (a,b,c).
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Sequence

# Field metadata: a dict field whose values are the fields of this dataclass (e.g. LOMITConfig overrides),
# converted to those fields' types; unknown keys are left for the config's own validation to report.
FIELDS_OF = "fields_of"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


# -- raw values ------------------------------------------------------------------------------------

def load_values(path: str | Path | None = None, overrides: Sequence[str] = (),
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """`base` (a dict), then a TOML/JSON file, then `key=value` overrides, as one nested dict."""
    values: dict[str, Any] = dict(base or {})
    if path is not None:
        values = merge(values, read_config_file(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(values, key, value)
    return values


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


def save_config(config, path: str | Path) -> Path:
    """Write a config (anything with `to_dict()`) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path


def merge(base: dict, update: dict) -> dict:
    """`update` over `base`, tables merged key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_dotted(values: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    target = values
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a table")
        target = child
    target[last] = value


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so the dict is JSON / TOML friendly."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# -- typed construction ----------------------------------------------------------------------------

def build_dataclass(cls, values: Any, prefix: str = ""):
    """Instantiate dataclass `cls` from a dict, converting each value to its field's type."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)} "
                          f"(known: {', '.join(sorted(prefix + f for f in fields))})")
    kwargs = {}
    for name, value in values.items():
        fields_of = fields[name].metadata.get(FIELDS_OF)
        if fields_of is not None:
            kwargs[name] = _convert_fields_of(fields_of, value, prefix + name)
        else:
            kwargs[name] = _convert(hints[name], value, prefix + name)
    return cls(**kwargs)


def _convert_fields_of(cls, values: Any, key: str) -> dict:
    if not isinstance(values, dict):
        raise ConfigError(f"{key} must be a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    return {name: _convert(hints[name], value, f"{key}.{name}") if name in hints else value
            for name, value in values.items()}


def _convert(hint, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, key + ".")
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
        return dict(value)
    return value


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


# -- checks for `validate` -------------------------------------------------------------------------

def choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{key} must be >= {low}, got {value}")


def check_backend(backend: str) -> None:
    from lmt_fast import ops

    choice("backend", backend, ["auto", *ops.available_backends()])


def check_betas(betas: tuple[float, float]) -> None:
    if not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"betas must lie in [0, 1), got {betas}")


def check_loss_weights(loss) -> None:
    """Every float-typed field of a loss-weights dataclass is a weight and must be >= 0."""
    hints = typing.get_type_hints(type(loss))
    for name, value in vars(loss).items():
        if hints.get(name) is float and value < 0:
            raise ConfigError(f"loss.{name} must be >= 0, got {value}")
