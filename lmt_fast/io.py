"""Checkpoints (safetensors weights + JSON config, never pickle) and image files.

A checkpoint is either a directory holding `config.json` and `model.safetensors`, or one `.safetensors`
file whose metadata carries the same JSON under the key "lmt_fast". Weights are stored under
"generator." and (optionally) "discriminator." prefixes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_NAME = "lmt_fast.checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METADATA_KEY = "lmt_fast"
# Each model kind: what it is, and what loads it (named when a checkpoint is opened as another kind).
MODEL_KINDS = {
    "lomit": ("a LOMIT translator", "lmt_fast.Translator.load (or `lmt-fast translate`)"),
    "mgst": ("an MGST purifier", "lmt_fast.purifier.Purifier.load (or `lmt-fast purify`)"),
    "pupil_regressor": ("a pupil regressor", "lmt_train.mgst.regressor.load_network"),
    "pupil_segmenter": ("a pupil segmenter", "lmt_train.mgst.regressor.load_network"),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit its model; the message says why."""


class ImageError(ValueError):
    """An image file or array that cannot be used; the message says why."""


@dataclass
class Checkpoint:
    config: Any                           # LOMITConfig
    generator: nn.Module
    discriminator: nn.Module | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # the JSON header (format, version, extra)
    path: Path | None = None


# -- saving ---------------------------------------------------------------------------------------

def save_checkpoint(generator: nn.Module, path: str | os.PathLike, discriminator: nn.Module | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a LOMIT `generator` (and optionally `discriminator`) to `path`.

    A path ending in ".safetensors" gives a single file; anything else a directory (created if needed).
    `extra` is JSON-serialisable information kept in the header (training step, dataset, ...).
    The write goes through a temporary file and a rename, so an interrupted save never leaves a
    half-written checkpoint under the final name.
    """
    return write_checkpoint(path, "lomit", generator.config.to_dict(),
                            {"generator.": generator, "discriminator.": discriminator}, extra)


def write_checkpoint(path: str | os.PathLike, kind: str, config: dict[str, Any],
                     modules: dict[str, nn.Module | None], extra: dict[str, Any] | None = None) -> Path:
    """Write any model kind in the lmt_fast format: a header (format, version, kind, config, extra) and
    the state of each module under its key prefix (None modules are skipped). Atomic, as save_checkpoint."""
    from safetensors.torch import save_file

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    path = Path(path)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model": kind,
        "config": config,
        "has_discriminator": modules.get("discriminator.") is not None,
        "extra": extra or {},
    }
    tensors = {}
    for prefix, module in modules.items():
        if module is not None:
            tensors.update(_prefixed(module, prefix))
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic({path: lambda tmp: save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(header)})})
    else:
        path.mkdir(parents=True, exist_ok=True)
        _atomic({path / WEIGHTS_FILE: lambda tmp: save_file(tensors, tmp),
                 path / CONFIG_FILE: lambda tmp: Path(tmp).write_text(json.dumps(header, indent=2) + "\n")})
    return path


def _prefixed(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _atomic(writers: dict) -> None:
    """Write every file to a temporary name first and rename them only when all writes succeeded, so an
    interrupted save keeps the previous checkpoint whole and leaves no temporary files behind."""
    temps = {final: final.with_name(final.name + ".tmp") for final in writers}
    try:
        for final, write in writers.items():
            write(str(temps[final]))
        for final, tmp in temps.items():
            os.replace(tmp, final)
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


# -- loading --------------------------------------------------------------------------------------

def read_header(path: str | os.PathLike, kind: str = "lomit") -> tuple[dict[str, Any], Path]:
    """The JSON header of a checkpoint of model `kind` and the path of its weights file.

    Validates format, version and kind; a checkpoint of another kind is an error naming what loads it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        config_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        for needed in (config_file, weights):
            if not needed.is_file():
                raise CheckpointError(f"{path} is not an lmt_fast checkpoint: {needed.name} is missing")
        try:
            header = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from None
    else:
        weights = path
        header = _file_header(path)
    _check_header(header, path, kind)
    return header, weights


def _file_header(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise CheckpointError(f"{path}: pickled PyTorch files are not loaded (unsafe); "
                              "lmt_fast checkpoints are safetensors + JSON (see lmt_fast.io.save_checkpoint)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file without lmt_fast metadata "
                              f"(no '{METADATA_KEY}' key); was it written by save_checkpoint?")
    try:
        return json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the lmt_fast metadata is not valid JSON: {exc}") from None


def _check_header(header: Any, path: Path, kind: str) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not an lmt_fast checkpoint (format is not {FORMAT_NAME!r})")
    version = header.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}, newer than this lmt_fast "
                              f"supports ({FORMAT_VERSION}); upgrade lmt_fast")
    found = header.get("model")
    if found != kind:
        if found in MODEL_KINDS:
            (found_what, found_loader), (wanted_what, _) = MODEL_KINDS[found], MODEL_KINDS[kind]
            raise CheckpointError(f"{path} is {found_what} checkpoint, not {wanted_what}: load it with {found_loader}")
        raise CheckpointError(f"{path}: unknown model kind {found!r}; expected {kind!r}")
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path}: the config is missing")


def read_tensors(weights: Path, path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint's weights file; keys outside `prefixes` are an error (wrong model)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    stray = sorted(k for k in tensors if not k.startswith(prefixes))
    if stray:
        raise CheckpointError(f"{path} does not fit its config: unexpected {len(stray)} key(s) outside "
                              f"{'/'.join(prefixes)}: {_preview(stray)}")
    return tensors


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    discriminator: bool = False, config_overrides: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; the generator comes back in eval mode.

    Keys, shapes and the format version are checked and every mismatch is named in one CheckpointError.
    `config_overrides` changes config fields that do not alter weights' shapes (e.g. compat).
    """
    from lmt_fast.models import LOMITConfig, LOMITDiscriminator, LOMITGenerator

    header, weights = read_header(path)
    try:
        config = LOMITConfig.from_dict({**header["config"], **(config_overrides or {})})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from None
    tensors = read_tensors(weights, path, ("generator.", "discriminator."))
    saved_compat = header["config"].get("compat", "paper")
    if config.compat != saved_compat:
        tensors = _switch_compat(tensors, saved_compat, config.compat, path)
    generator = LOMITGenerator(config)
    load_state(generator, tensors, "generator.", path)
    disc = None
    if discriminator:
        disc = LOMITDiscriminator(config)
        load_discriminator(disc, tensors, path)
        disc.to(device)
    generator.to(device).eval()
    return Checkpoint(config, generator, disc, header, Path(path))


def _switch_compat(tensors: dict, saved: str, wanted: str, path) -> dict:
    """official -> paper drops the content encoder's running instance-norm statistics (the paper uses
    per-instance statistics); paper -> official cannot invent them."""
    from lmt_fast.models.official import is_running_instance_stat

    if wanted == "paper":
        return {k: v for k, v in tensors.items()
                if not (k.startswith("generator.") and is_running_instance_stat(k[len("generator."):]))}
    raise CheckpointError(f"{path} was saved with compat={saved!r} and has no running instance-norm "
                          f"statistics, which compat={wanted!r} needs")


def load_discriminator(module: nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    if not any(k.startswith("discriminator.") for k in tensors):
        raise CheckpointError(f"{path} holds no discriminator weights")
    load_state(module, tensors, "discriminator.", path)


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path) -> None:
    """Load the tensors under `prefix` into `module`; every missing, unexpected or misshapen key is named."""
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_preview(unexpected)}")
    for key in sorted(set(own) & set(expected)):
        if own[key].shape != expected[key].shape:
            problems.append(f"{prefix}{key} has shape {tuple(own[key].shape)}, the config expects "
                            f"{tuple(expected[key].shape)}")
    if problems:
        raise CheckpointError(f"{path} does not fit its config: " + "; ".join(problems))
    module.load_state_dict(own)


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# -- images ---------------------------------------------------------------------------------------

def load_image(path: str | os.PathLike):
    """Open an image file as RGB. Returns (PIL image, notes) where notes say what was converted."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path}")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is an empty file")
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
            rgb, notes = to_rgb(upright, str(path))
            if _has_rotation(img):
                notes.append(f"{path}: rotated upright as its EXIF orientation says")
            return rgb, notes
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image file that Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"{path} could not be decoded ({exc})") from None


def _has_rotation(img) -> bool:
    return img.getexif().get(0x0112, 1) not in (1, None)  # 0x0112: EXIF Orientation


def to_rgb(img, name: str = "image"):
    """Convert a PIL image to RGB, returning (rgb image, notes about the conversion)."""
    notes = []
    if img.mode == "RGB":
        return img.copy(), notes
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        notes.append(f"{name}: {img.mode} image composited onto white and converted to RGB (alpha dropped)")
        rgba = img.convert("RGBA")
        from PIL import Image

        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), notes
    if img.mode in ("L", "1", "I", "I;16", "F"):
        notes.append(f"{name}: grayscale ({img.mode}) image converted to RGB")
        if img.mode in ("I", "I;16", "F"):
            img = _scale_to_8bit(img)
    else:
        notes.append(f"{name}: {img.mode} image converted to RGB")
    return img.convert("RGB"), notes


def _scale_to_8bit(img):
    """16-bit and float grayscale to 8 bits. The range comes from the mode, not from the pixel values,
    so a dark 16-bit image stays dark: I;16* spans 0..65535, float images 0..1; mode I (32-bit int, as
    Pillow opens 16-bit PNGs) spans 0..65535 unless its values exceed that."""
    import numpy as np
    from PIL import Image

    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        hi = 1.0 if a.size == 0 or a.max() <= 1.0 else float(a.max())
    elif img.mode == "I" and a.size and a.max() > 65535:
        hi = float(a.max())
    else:
        hi = 65535.0
    return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def load_mask(path: str | os.PathLike):
    """Open a mask image as a float32 array (H, W) in [0, 1] (grayscale; 255 = apply the style)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ImageError(f"mask not found or empty: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L") if img.mode not in ("I", "I;16", "F") else _scale_to_8bit(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"mask {path} could not be read ({exc})") from None
    return np.asarray(gray, dtype=np.float32) / 255.0


def save_image(image, path: str | os.PathLike) -> Path:
    """Write a PIL image, creating the parent directory; the format follows the suffix."""
    path = check_image_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
        raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def check_image_path(path: str | os.PathLike) -> Path:
    """An output image path whose format Pillow can tell from the suffix and which is not a directory."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise ImageError(f"output {path} is a directory; give a file name such as out.png")
    if path.suffix.lower() not in Image.registered_extensions():
        raise ImageError(f"cannot tell the image format of {path} from its suffix; use .png or .jpg")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ImageError(f"cannot write {path}: {parent} is a file, not a directory")
            break
    return path
