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

import torch

from lmt_fast import image_inputs, ops
from lmt_fast.image_inputs import PreparedImage
from lmt_fast.io import ImageError
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
        image_inputs.check_batch(images, masks, batch_size, PurifierError, "purify", "image", "masks")
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

    def _prepare(self, image, role: str) -> PreparedImage:
        try:
            prepared = image_inputs.read_image(image, role, PurifierError, "purify")
        except ImageError as exc:  # an unreadable file is reported with its role, as every other input problem
            raise PurifierError(f"{role}: {exc}") from None
        prepared.tensor = self._to_working_size(prepared.tensor.to(self.device), role, prepared.notes)
        return prepared

    def _to_working_size(self, x: torch.Tensor, role: str, notes: list[str]) -> torch.Tensor:
        if self.resize == "none":
            image_inputs.check_multiple(x, role, self.config.size_multiple, PurifierError, unit=" (WxH)")
            return x
        h, w = x.shape[-2:]
        th, tw = self.config.image_size
        if (h, w) != (th, tw):
            back = "; the result is resized back" if role == "image" else ""
            notes.append(f"{role}: {w}x{h} resized to {tw}x{th} (WxH) for the model (aspect ratio not kept){back}")
            x = image_inputs.resize_image(x, (th, tw))
        return x

    def _prepare_mask(self, mask, image: PreparedImage, role: str) -> torch.Tensor | None:
        """A mask at its image's size -> (1, 1, h, w) float32 in [0, 1] at working size (None if unused)."""
        if not self.uses_regions:
            if mask is not None:
                image_inputs.mask_to_tensor(mask, role, PurifierError)  # still report an unreadable mask
                note = f"{role}: this model is the global baseline (no regions); the mask is not used"
                if note not in image.notes:
                    image.notes.append(note)
            return None
        if mask is None:
            raise PurifierError(f"{role} is missing: this MGST model works on RGB-mask pairs and needs the "
                                "attention mask (iris + pupil = white) of its image")
        return image_inputs.read_mask(mask, image, role, PurifierError, self.device, unit=" (WxH)").clamp_(0, 1)

    def _cast(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(self.dtype)

    def _result(self, y: torch.Tensor, m: torch.Tensor | None, src: PreparedImage, notes) -> PurificationResult:
        if m is None:  # the global baseline styles the whole image
            m = torch.ones(1, 1, *src.size, device=y.device)
        return PurificationResult(image_inputs.image_back(y, src), image_inputs.mask_back(m, src), list(notes))


def _parse_device(device) -> torch.device:
    return image_inputs.parse_device(device, PurifierError)


def _parse_dtype(dtype) -> torch.dtype:
    return image_inputs.parse_dtype(dtype, PurifierError)


def _resolve_backend(backend: str, device: torch.device) -> str:
    """"eager" means the reference ops; anything else is an op backend name or "auto"."""
    return image_inputs.resolve_op_backend(backend, device, PurifierError,
                                           ["auto", "eager"] + ops.available_backends())
