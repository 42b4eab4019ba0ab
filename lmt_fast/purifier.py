"""Purifier: the public API of MGST (make real eye images look like the synthetic training domain).

    from lmt_fast.purifier import Purifier
    p = Purifier.from_pretrained()                         # the model embedded in lmt_fast/assets/mgst
    p = Purifier.load("runs/mgst", device="cpu", backend="auto")
    r = p.purify("eye.png", mask="eye_mask.png")           # r.image, r.mask, r.notes
    style = p.encode_style("synthetic.png", "synthetic_mask.png")   # a style image instead of the stored style
    r = p.purify(eye_array, mask_array, style=style)

Inputs follow lmt_fast.Translator: an image is a path, a PIL image, a uint8 HxWx3 numpy array or a float
tensor in [-1, 1] of shape (3, H, W) / (1, 3, H, W); the result comes back in the same kind, at the
input's size. The mask (the attention region: iris + pupil = 1, the rest = 0) is a path to a grayscale
image, a PIL image, a numpy array (uint8 0..255, or float / bool in [0, 1]) or a tensor in [0, 1]; it must
have its image's size. Both regions must be present for a region-wise model: an all-zero or all-one mask
is allowed but the missing region simply gets no style.

Pre-processing policy (`resize`), as in Translator:
    "model" (default)  images are resized (bilinear, antialiased) to the model's training size (36x60 for
                       the shipped model) and the result back to the input's size; the notes say so.
    "none"             images run at their own size, whose sides must be multiples of the model's
                       size_multiple (4); anything else is an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lmt_fast import image_inputs, ops
from lmt_fast.io import ImageError, load_image, to_rgb
from lmt_fast.models.mgst import MGSTGenerator, MGSTStyle, load_mgst_checkpoint

RESIZE_POLICIES = ("model", "none")
DTYPES = image_inputs.DTYPES
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "mgst"


class PurifierError(ValueError):
    """Bad input to the Purifier; the message names the problem."""


@dataclass
class PurificationResult:
    image: Any                 # same kind as the input (PIL / uint8 array / tensor), at the input's size
    mask: Any                  # the attention mask used, at the input's size (PIL "L" / float array / tensor)
    notes: list[str] = field(default_factory=list)


@dataclass
class PurifierStyle:
    """Region styles of a style image (`Purifier.encode_style`), reusable for any number of images."""

    style: MGSTStyle
    notes: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    tensor: torch.Tensor       # (1, 3, h, w) float32 in [-1, 1] at working size, on the device
    size: tuple[int, int]      # original (H, W)
    kind: str                  # "pil" | "numpy" | "tensor"
    like: torch.Tensor | None
    notes: list[str]


class Purifier:
    def __init__(self, generator: MGSTGenerator, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, backend: str = "auto", resize: str = "model"):
        self.device = _parse_device(device)
        self.dtype = _parse_dtype(dtype)
        if resize not in RESIZE_POLICIES:
            raise PurifierError(f"resize must be one of {list(RESIZE_POLICIES)}, got {resize!r}")
        self.resize = resize
        self.config = generator.config
        self.backend = _resolve_backend(backend, self.device)
        self.generator = generator.to(device=self.device, dtype=self.dtype).eval()
        # the stored style is statistics (float32 like every statistic of the op family)
        self.generator.style_mean.data = self.generator.style_mean.float()
        self.generator.style_std.data = self.generator.style_std.float()
        self.generator.set_backend(self.backend)
        self.generator.requires_grad_(False)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: str | torch.dtype | None = None, backend: str = "auto", resize: str = "model") -> "Purifier":
        """Load an MGST checkpoint (directory or .safetensors file written by save_mgst_checkpoint)."""
        checkpoint = load_mgst_checkpoint(path, device="cpu")
        return cls(checkpoint.generator, device=device, dtype=dtype, backend=backend, resize=resize)

    @classmethod
    def from_pretrained(cls, **kwargs) -> "Purifier":
        """The MGST model embedded in the package (lmt_fast/assets/mgst; no download)."""
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise FileNotFoundError(f"no embedded MGST model in this installation ({DEFAULT_MODEL} holds no "
                                    "config.json); "
                                    "load a checkpoint with Purifier.load(path) (train one with lmt-train mgst train)")
        return cls.load(DEFAULT_MODEL, **kwargs)

    @property
    def uses_regions(self) -> bool:
        return self.config.mask_mode == "regions"

    # -- purification ------------------------------------------------------------------------------
    @torch.inference_mode()
    def purify(self, image, mask=None, style=None) -> PurificationResult:
        """Purify one image. style: None (the stored synthetic-domain style), a PurifierStyle from
        `encode_style`, or an (image, mask) pair of a style image."""
        src = self._prepare(image, "image")
        m = self._prepare_mask(mask, src, "mask")
        notes = list(src.notes)
        code = self._style(style, notes)
        y = self.generator(self._cast(src.tensor), self._cast(m), code)
        return self._result(y, m, src, notes)

    @torch.inference_mode()
    def purify_batch(self, images: Sequence, masks: Sequence | None = None, style=None,
                     batch_size: int = 32) -> list[PurificationResult]:
        """Purify many images (batch_size at a time; mixed working sizes run one by one)."""
        if isinstance(images, (str, os.PathLike, torch.Tensor, np.ndarray)) or not hasattr(images, "__len__"):
            raise PurifierError("purify_batch takes a list of images; use purify for one image")
        if masks is not None and len(masks) != len(images):
            raise PurifierError(f"{len(masks)} masks for {len(images)} images")
        if batch_size < 1:
            raise PurifierError(f"batch_size must be >= 1, got {batch_size}")
        notes: list[str] = []
        code = self._style(style, notes)
        masks = list(masks) if masks is not None else [None] * len(images)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = [self._prepare(x, f"image {start + i}") for i, x in enumerate(images[start:start + batch_size])]
            chunk_masks = [self._prepare_mask(m, p, f"masks[{start + i}]")
                           for i, (m, p) in enumerate(zip(masks[start:start + batch_size], chunk))]
            groups: dict[tuple, list[int]] = {}
            for i, p in enumerate(chunk):
                groups.setdefault(tuple(p.tensor.shape), []).append(i)
            out: dict[int, PurificationResult] = {}
            for members in groups.values():
                x = torch.cat([chunk[i].tensor for i in members])
                m = None if chunk_masks[members[0]] is None else torch.cat([chunk_masks[i] for i in members])
                y = self.generator(self._cast(x), self._cast(m), code)
                for j, i in enumerate(members):
                    out[i] = self._result(y[j:j + 1], None if m is None else m[j:j + 1], chunk[i],
                                          chunk[i].notes + notes)
            results.extend(out[i] for i in range(len(chunk)))
        return results

    @torch.inference_mode()
    def encode_style(self, image, mask=None) -> PurifierStyle:
        """Region styles of a style image (e.g. a synthetic eye and its mask), to use instead of the stored one."""
        src = self._prepare(image, "style image")
        m = self._prepare_mask(mask, src, "style mask")
        style = self.generator.style_from_image(self._cast(src.tensor), self._cast(m))
        return PurifierStyle(style, [n.replace("image:", "style image:", 1) for n in src.notes])

    def stored_style(self) -> PurifierStyle:
        return PurifierStyle(self.generator.stored_style(1))

    # -- pre- and post-processing -----------------------------------------------------------------
    def _style(self, style, notes: list[str]) -> MGSTStyle | None:
        if style is None:
            if int(self.generator.style_images) == 0:
                notes.append("the stored style of this checkpoint was never calibrated (an untrained model?)")
            return None
        if isinstance(style, PurifierStyle):
            notes.extend(style.notes)
            return style.style
        if isinstance(style, MGSTStyle):
            return style
        if isinstance(style, (tuple, list)) and len(style) == 2:
            encoded = self.encode_style(*style)
            notes.extend(encoded.notes)
            return encoded.style
        raise PurifierError("style must be None (the stored style), a PurifierStyle from encode_style, "
                            f"or an (image, mask) pair; got {type(style).__name__}")

    def _prepare(self, image, role: str) -> _Prepared:
        notes: list[str] = []
        like = None
        if isinstance(image, (str, os.PathLike)):
            try:
                pil, notes = load_image(image)
            except ImageError as exc:
                raise PurifierError(f"{role}: {exc}") from None
            kind, tensor = "pil", image_inputs.uint8_to_tensor(np.asarray(pil, dtype=np.uint8))
        elif image_inputs.is_pil(image):
            pil, notes = to_rgb(image, role)
            kind, tensor = "pil", image_inputs.uint8_to_tensor(np.asarray(pil, dtype=np.uint8))
        elif isinstance(image, np.ndarray):
            kind, tensor = "numpy", _array_to_tensor(image, role, notes)
        elif isinstance(image, torch.Tensor):
            kind, like, tensor = "tensor", image, _check_tensor(image, role)
        else:
            raise PurifierError(f"{role}: unsupported type {type(image).__name__}; pass a path, a PIL image, "
                                "a uint8 HxWx3 numpy array or a float tensor in [-1, 1]")
        size = (tensor.shape[-2], tensor.shape[-1])
        return _Prepared(self._to_working_size(tensor.to(self.device), role, notes), size, kind, like, notes)

    def _to_working_size(self, x: torch.Tensor, role: str, notes: list[str]) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.resize == "none":
            k = self.config.size_multiple
            if h % k or w % k:
                raise PurifierError(f"{role} is {w}x{h} (WxH); with resize='none' both sides must be multiples of {k}")
            return x
        th, tw = self.config.image_size
        if (h, w) != (th, tw):
            back = "; the result is resized back" if role == "image" else ""
            notes.append(f"{role}: {w}x{h} resized to {tw}x{th} (WxH) for the model (aspect ratio not kept){back}")
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True).clamp_(-1, 1)
        return x

    def _prepare_mask(self, mask, image: _Prepared, role: str) -> torch.Tensor | None:
        """A mask at its image's size -> (1, 1, h, w) float32 in [0, 1] at working size (None if unused)."""
        if not self.uses_regions:
            if mask is not None:
                _mask_to_tensor(mask, role)  # still report an unreadable mask
                note = f"{role}: this model is the global baseline (no regions); the mask is not used"
                if note not in image.notes:
                    image.notes.append(note)
            return None
        if mask is None:
            raise PurifierError(f"{role} is missing: this MGST model works on RGB-mask pairs and needs the "
                                "attention mask (iris + pupil = white) of its image")
        m = _mask_to_tensor(mask, role)
        if tuple(m.shape[-2:]) != image.size:
            raise PurifierError(f"{role} is {m.shape[-1]}x{m.shape[-2]} but its image is {image.size[1]}x{image.size[0]} "
                                "(WxH); a mask must have its image's size")
        work = tuple(image.tensor.shape[-2:])
        m = m.to(self.device)
        if tuple(m.shape[-2:]) != work:
            m = F.interpolate(m, size=work, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        return m

    def _cast(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(self.dtype)

    def _result(self, y: torch.Tensor, m: torch.Tensor | None, src: _Prepared, notes) -> PurificationResult:
        y = y.float()
        if tuple(y.shape[-2:]) != src.size:
            y = F.interpolate(y, size=src.size, mode="bilinear", align_corners=False, antialias=True)
        if m is None:
            m = torch.ones(1, 1, *y.shape[-2:], device=y.device)
        elif tuple(m.shape[-2:]) != src.size:
            m = F.interpolate(m.float(), size=src.size, mode="bilinear", align_corners=False)
        return PurificationResult(_image_out(y.clamp(-1, 1), src), _mask_out(m.float().clamp(0, 1), src), list(notes))


# -- conversions (the conventions of lmt_fast.translator) --------------------------------------------

def _array_to_tensor(array, role: str, notes: list[str]) -> torch.Tensor:
    return image_inputs.array_to_tensor(array, role, notes, PurifierError)


def _check_tensor(t: torch.Tensor, role: str) -> torch.Tensor:
    return image_inputs.check_tensor(t, role, PurifierError, "purify")


def _mask_to_tensor(mask, role: str) -> torch.Tensor:
    return image_inputs.mask_to_tensor(mask, role, PurifierError)


def _image_out(x: torch.Tensor, src: _Prepared):
    return image_inputs.image_out(x, src.kind, src.like)


def _mask_out(m: torch.Tensor, src: _Prepared):
    if src.kind == "tensor":
        return m.to(src.like.device)[0] if src.like.dim() == 3 else m.to(src.like.device)
    array = m[0, 0].cpu().numpy()
    if src.kind == "numpy":
        return array
    from PIL import Image

    return Image.fromarray(np.round(array * 255).astype(np.uint8), mode="L")


def _parse_device(device) -> torch.device:
    return image_inputs.parse_device(device, PurifierError)


def _parse_dtype(dtype) -> torch.dtype:
    return image_inputs.parse_dtype(dtype, PurifierError)


def _resolve_backend(backend: str, device: torch.device) -> str:
    """"eager" means the reference ops; anything else is an op backend name or "auto"."""
    if backend == "eager":
        return "reference"
    try:
        return ops.resolve_backend(backend, device)
    except ValueError as exc:
        raise PurifierError(f"backend {backend!r} is not usable here: {exc}; choose from "
                            f"{['auto', 'eager'] + ops.available_backends()}") from None
