"""Image and mask conversions shared by the public APIs (Translator, Purifier).

Each public API raises its own ValueError subclass, so every check takes the exception class to raise;
the messages name the role ("input", "exemplar", "image", ...) and the problem. An image goes in with
`read_image` (and its mask with `read_mask`); its results come back at its size and in its kind with
`image_back` / `mask_back`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lmt_fast import ops
from lmt_fast.io import ImageError, load_image, load_mask, to_rgb


@dataclass
class PreparedImage:
    tensor: torch.Tensor       # (1, 3, h, w) float32 in [-1, 1]; the APIs move it to their working size
    size: tuple[int, int]      # original (H, W)
    kind: str                  # "pil" | "numpy" | "tensor"
    like: torch.Tensor | None  # for tensor inputs: the original, to restore shape/dtype/device
    notes: list[str]


def is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def uint8_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    t = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)[None].float()
    return t / 127.5 - 1.0


def array_to_tensor(array: np.ndarray, role: str, notes: list[str], error: type[Exception]) -> torch.Tensor:
    """A uint8 HWC (or grayscale / RGBA) array as (1, 3, H, W) in [-1, 1]; conversions go into `notes`."""
    if array.dtype != np.uint8:
        raise error(f"{role}: numpy images must be uint8 HxWx3 (got dtype {array.dtype}); pass "
                    "floats as a torch tensor in [-1, 1] of shape (3, H, W)")
    if array.ndim == 2:
        notes.append(f"{role}: grayscale array converted to RGB")
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        notes.append(f"{role}: RGBA array composited onto white and converted to RGB (alpha dropped)")
        alpha = array[:, :, 3:].astype(np.float32) / 255.0
        array = np.round(array[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    elif array.ndim == 3 and array.shape[2] == 1:
        notes.append(f"{role}: single-channel array converted to RGB")
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise error(f"{role}: numpy images must be HxWx3 uint8 (HWC); got shape {array.shape}")
    if min(array.shape[:2]) < 1:
        raise error(f"{role}: empty image of shape {array.shape}")
    return uint8_to_tensor(array)


def check_tensor(t: torch.Tensor, role: str, error: type[Exception], verb: str) -> torch.Tensor:
    """A float tensor (3, H, W) / (1, 3, H, W) in [-1, 1] as (1, 3, H, W) float32; `verb` names the call
    ("translate", "purify") whose batch variant the error suggests."""
    if not t.is_floating_point():
        raise error(f"{role}: tensors must be floating point in [-1, 1] (got {t.dtype}); "
                    "uint8 images go in as numpy HWC arrays")
    if t.dim() == 4 and t.shape[0] != 1:
        raise error(f"{role}: {verb} takes one image, got a batch of {t.shape[0]}; use {verb}_batch")
    if t.dim() not in (3, 4) or t.shape[-3] != 3:
        raise error(f"{role}: tensors must have shape (3, H, W) or (1, 3, H, W); got {tuple(t.shape)}")
    if t.numel() == 0:
        raise error(f"{role}: empty tensor of shape {tuple(t.shape)}")
    x = t.detach().reshape(1, 3, *t.shape[-2:]).float()
    if not torch.isfinite(x).all():
        raise error(f"{role}: tensor contains NaN or infinite values")
    lo, hi = x.min().item(), x.max().item()
    if lo < -1.001 or hi > 1.001:
        raise error(f"{role}: tensor values must lie in [-1, 1]; got [{lo:.3g}, {hi:.3g}] "
                    "(images in [0, 1] need x * 2 - 1)")
    return x.clamp(-1, 1)


def mask_to_tensor(mask, role: str, error: type[Exception]) -> torch.Tensor:
    """A mask (path, PIL, array: uint8 0..255 / bool / float in [0, 1], tensor) as (1, 1, H, W) float32."""
    if isinstance(mask, (str, os.PathLike)):
        try:
            t = torch.from_numpy(load_mask(mask))
        except ImageError as exc:
            raise error(f"{role}: {exc}") from None
    elif is_pil(mask):
        t = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)
    elif isinstance(mask, np.ndarray):
        if mask.dtype == np.uint8:
            t = torch.from_numpy(mask.astype(np.float32) / 255.0)
        elif mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.floating):
            t = torch.from_numpy(mask.astype(np.float32))
        else:
            raise error(f"{role}: numpy masks must be uint8 (0..255), bool or float in [0, 1]; "
                        f"got dtype {mask.dtype}")
    elif isinstance(mask, torch.Tensor):
        t = mask.detach().float().cpu()
    else:
        raise error(f"{role}: unsupported mask type {type(mask).__name__}; pass a path, a PIL image, "
                    "a numpy array or a tensor")
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise error(f"{role}: a mask must be a single channel (H, W); got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise error(f"{role}: empty mask of shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise error(f"{role}: mask contains NaN or infinite values")
    if t.min() < 0 or t.max() > 1:
        raise error(f"{role}: mask values must lie in [0, 1]; got [{t.min():.3g}, {t.max():.3g}]")
    return t[None, None]


def read_image(image, role: str, error: type[Exception], verb: str) -> PreparedImage:
    """Any accepted image (path, PIL, uint8 array, float tensor) as a PreparedImage at its own size, on the
    CPU. A file that cannot be read raises ImageError; `verb` is as for `check_tensor`."""
    notes: list[str] = []
    like = None
    if isinstance(image, (str, os.PathLike)):
        pil, notes = load_image(image)
        kind, tensor = "pil", uint8_to_tensor(np.asarray(pil, dtype=np.uint8))
    elif is_pil(image):
        pil, notes = to_rgb(image, role)
        kind, tensor = "pil", uint8_to_tensor(np.asarray(pil, dtype=np.uint8))
    elif isinstance(image, np.ndarray):
        kind, tensor = "numpy", array_to_tensor(image, role, notes, error)
    elif isinstance(image, torch.Tensor):
        kind, like, tensor = "tensor", image, check_tensor(image, role, error, verb)
    else:
        raise error(f"{role}: unsupported type {type(image).__name__}; pass a path, a PIL image, "
                    "a uint8 HxWx3 (HWC) numpy array or a float tensor in [-1, 1]")
    return PreparedImage(tensor, (tensor.shape[-2], tensor.shape[-1]), kind, like, notes)


def check_batch(images, masks, batch_size: int, error: type[Exception], verb: str, noun: str,
                masks_noun: str) -> None:
    """The arguments of a `{verb}_batch` call: a list of `noun`s, as many masks if any, batch_size >= 1."""
    if isinstance(images, (str, os.PathLike, torch.Tensor, np.ndarray)) or not hasattr(images, "__len__"):
        raise error(f"{verb}_batch takes a list of {noun}s; use {verb} for one image")
    if masks is not None and len(masks) != len(images):
        raise error(f"{len(masks)} {masks_noun} for {len(images)} {noun}s")
    if batch_size < 1:
        raise error(f"batch_size must be >= 1, got {batch_size}")


def check_multiple(x: torch.Tensor, role: str, multiple: int, error: type[Exception], unit: str = "") -> None:
    """resize="none": the model's strided convs need both sides to be multiples of `multiple`."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise error(f"{role} is {w}x{h}{unit}; with resize='none' both sides must be multiples of {multiple}")


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] to `size` (bilinear, antialiased), still in [-1, 1]."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(-1, 1)


def read_mask(mask, image: PreparedImage, role: str, error: type[Exception], device: torch.device,
              unit: str = "") -> torch.Tensor:
    """A mask that must have its image's original size -> (1, 1, h, w) float32 on `device` at the image's
    working size (bilinear, antialiased; the caller clamps after any further resize)."""
    m = mask_to_tensor(mask, role, error)
    if tuple(m.shape[-2:]) != image.size:
        raise error(f"{role} is {m.shape[-1]}x{m.shape[-2]} but its image is {image.size[1]}x{image.size[0]}"
                    f"{unit}; a mask must have its image's size")
    work = tuple(image.tensor.shape[-2:])
    m = m.to(device)
    if tuple(m.shape[-2:]) != work:
        m = F.interpolate(m, size=work, mode="bilinear", align_corners=False, antialias=True)
    return m


def image_back(y: torch.Tensor, src: PreparedImage):
    """A model output (1, 3, h, w) back at its input's original size and in its input's kind."""
    y = y.float()
    if tuple(y.shape[-2:]) != src.size:
        y = F.interpolate(y, size=src.size, mode="bilinear", align_corners=False, antialias=True)
    return image_out(y.clamp(-1, 1), src.kind, src.like)


def mask_back(m: torch.Tensor, src: PreparedImage):
    """A mask (1, 1, h, w) in [0, 1] at its image's original size and in its image's kind: a tensor shaped
    and placed like the image, a float (H, W) array, or a PIL "L" image."""
    m = m.float()
    if tuple(m.shape[-2:]) != src.size:
        m = F.interpolate(m, size=src.size, mode="bilinear", align_corners=False)
    m = m.clamp(0, 1)
    if src.kind == "tensor":
        m = m.to(src.like.device)
        return m[0] if src.like.dim() == 3 else m
    array = m[0, 0].cpu().numpy()
    if src.kind == "numpy":
        return array
    from PIL import Image

    return Image.fromarray(np.round(array * 255).astype(np.uint8), mode="L")


def image_out(x: torch.Tensor, kind: str, like: torch.Tensor | None):
    """(1, 3, H, W) in [-1, 1] back in the kind the image came in: "tensor" (shaped, typed and placed as
    `like`), "numpy" (uint8 HWC) or "pil" (RGB)."""
    if kind == "tensor":
        return x.reshape(like.shape).to(device=like.device, dtype=like.dtype)
    array = ((x[0].permute(1, 2, 0).cpu().numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    if kind == "numpy":
        return array
    from PIL import Image

    return Image.fromarray(array, mode="RGB")


# -- run settings shared by the public APIs ---------------------------------------------------------

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_device(device, error: type[Exception]) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise error(f"invalid device {device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error("device 'cuda' requested but CUDA is not available in this PyTorch build")
    return device


def parse_dtype(dtype, error: type[Exception]) -> torch.dtype:
    """None -> float32; a name in DTYPES or one of its torch dtypes -> that dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise error(f"dtype must be one of {list(DTYPES)}, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise error(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def resolve_op_backend(backend: str, device: torch.device, error: type[Exception], choices: list[str],
                       dtype: torch.dtype | None = None) -> str:
    """The op backend a module's norms run on: "eager" -> "reference" (the spec ops); "auto" or an op
    backend name -> the one that runs on `device` (and `dtype`); else `error`, listing `choices`."""
    if backend == "eager":
        return "reference"
    try:
        return ops.resolve_backend(backend, device, dtype=dtype)
    except ValueError as exc:
        raise error(f"backend {backend!r} is not usable here: {exc}; choose from {choices}") from None
