"""Real eye images on disk: a folder of frames with segmentation masks and optional pupil-centre labels.

Layout (LPW-style frames exported as PNGs, one mask per frame)::

    root/
      images/0001.png ...        RGB or grayscale frames (.png, .jpg, .jpeg, .bmp)
      masks/0001.png ...         one mask per frame, same stem, same size as its frame
      labels.csv                 optional: filename,pupil_x,pupil_y (pixels of the original frame)

A mask is either a grayscale attention mask (255 = iris + pupil, 0 = the rest; soft values allowed), or,
with ``attention_labels=(2, 3)``, an integer label map (e.g. 0 skin, 1 sclera, 2 iris, 3 pupil) whose
listed labels form the attention region. Pupil centres are (x, y) pixel coordinates with x to the right
and y down, pixel (i, j) spanning [j, j + 1) x [i, i + 1), as in lmt_train.data.eyes.

Items have the keys of ``SyntheticEyes`` (rendering "real"): "image" (3, H, W) in [-1, 1], "mask"
(1, H, W) in [0, 1], "pupil_centre" (2,) pixels of the returned size (NaN when the frame has no label),
plus "has_label", "filename" and "index". With ``size=(H, W)`` every frame is resized (bilinear,
antialiased; the aspect ratio is not kept) and its label scaled with it; with ``size=None`` frames keep
their size (then a DataLoader needs them all equal).

Every problem (missing folder, frame without a mask, mask of another size, malformed CSV row, label
outside its frame, unreadable file) raises ``DatasetError`` with one message naming the file.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lmt_train.data.folder import DatasetError, read_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LABEL_COLUMNS = ("filename", "pupil_x", "pupil_y")


def _shown(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def read_pupil_labels(path: Path, known: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{filename: (x, y)} from a labels CSV; malformed rows and unknown files raise DatasetError."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError(f"{path} is empty; expected a header '{','.join(LABEL_COLUMNS)}'")
    header = [cell.strip().lower() for cell in rows[0]]
    if header[:3] != list(LABEL_COLUMNS):
        raise DatasetError(f"{path}: the header must start with '{','.join(LABEL_COLUMNS)}', got '{','.join(rows[0])}'")
    known = set(known)
    labels: dict[str, tuple[float, float]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 3:
            raise DatasetError(f"{path} line {line}: expected filename,pupil_x,pupil_y, got {','.join(row)!r}")
        name = row[0].strip()
        try:
            x, y = float(row[1]), float(row[2])
        except ValueError:
            raise DatasetError(f"{path} line {line}: pupil_x and pupil_y must be numbers, got {row[1:3]}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DatasetError(f"{path} line {line}: pupil centre ({x}, {y}) is not finite")
        if name not in known:
            raise DatasetError(f"{path} line {line}: {name!r} is not an image in the images folder")
        if name in labels:
            raise DatasetError(f"{path} line {line}: {name!r} is labelled twice")
        labels[name] = (x, y)
    return labels


class EyeFolder(Dataset):
    """Frames + masks (+ optional pupil-centre labels) from `root`; see the module docstring."""

    def __init__(self, root: str | os.PathLike, size: tuple[int, int] | None = (36, 60),
                 images: str = "images", masks: str = "masks", labels: str | os.PathLike | None = "labels.csv",
                 attention_labels: Sequence[int] | None = None, require_labels: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"eye folder not found: {self.root}")
        self.image_dir, self.mask_dir = self.root / images, self.root / masks
        for folder, role in ((self.image_dir, "images"), (self.mask_dir, "masks")):
            if not folder.is_dir():
                raise DatasetError(f"{self.root} has no {folder.name}/ folder (the {role}); expected "
                                   f"{self.root}/{images}/*.png and {self.root}/{masks}/*.png")
        self.filenames = sorted(p.name for p in self.image_dir.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.filenames:
            raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.image_dir}")
        masks_by_stem = {p.stem: p for p in self.mask_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [name for name in self.filenames if Path(name).stem not in masks_by_stem]
        if missing:
            raise DatasetError(f"{len(missing)} image(s) in {self.image_dir} have no mask in {self.mask_dir} "
                               f"(same file stem): {_shown(missing)}")
        self.mask_paths = [masks_by_stem[Path(name).stem] for name in self.filenames]
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if self.size is not None and min(self.size) < 1:
            raise DatasetError(f"size must be positive (H, W), got {size}")
        self.attention_labels = None if attention_labels is None else tuple(int(v) for v in attention_labels)
        self.labels: dict[str, tuple[float, float]] = {}
        label_path = None if labels is None else (self.root / labels if not Path(labels).is_absolute() else Path(labels))
        if label_path is not None and label_path.is_file():
            self.labels = read_pupil_labels(label_path, self.filenames)
        elif require_labels:
            raise DatasetError(f"pupil-centre labels are required but {label_path} does not exist")
        if require_labels:
            unlabelled = [name for name in self.filenames if name not in self.labels]
            if unlabelled:
                raise DatasetError(f"{len(unlabelled)} image(s) have no row in {label_path.name}: {_shown(unlabelled)}")
        self.label_path = label_path

    def __len__(self) -> int:
        return len(self.filenames)

    def _mask(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """The attention mask of frame `index` as float32 (H, W) in [0, 1], checked against the frame's size."""
        from PIL import Image, UnidentifiedImageError

        path = self.mask_paths[index]
        if path.stat().st_size == 0:
            raise DatasetError(f"mask {path} is an empty file")
        try:
            with Image.open(path) as img:
                img.load()
                if self.attention_labels is not None:
                    values = np.asarray(img if img.mode in ("L", "P", "I", "I;16") else img.convert("L"))
                    mask = np.isin(values, self.attention_labels).astype(np.float32)
                else:
                    from lmt_fast.io import _scale_to_8bit

                    gray = img.convert("L") if img.mode not in ("I", "I;16", "F") else _scale_to_8bit(img)
                    mask = np.asarray(gray, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DatasetError(f"mask {path} could not be read ({exc})") from None
        if mask.shape != size:
            raise DatasetError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                               f"{self.filenames[index]} is {size[1]}x{size[0]} (WxH); a mask must have its image's size")
        return mask

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        name = self.filenames[index]
        image = read_rgb(self.image_dir / name)
        w0, h0 = image.size
        mask = self._mask(index, (h0, w0))
        centre = np.array(self.labels.get(name, (np.nan, np.nan)), dtype=np.float32)
        has_label = name in self.labels
        if has_label and not (0 <= centre[0] <= w0 and 0 <= centre[1] <= h0):
            raise DatasetError(f"{self.label_path}: the pupil centre ({centre[0]:g}, {centre[1]:g}) of {name} "
                               f"lies outside its {w0}x{h0} image")
        if self.size is not None and self.size != (h0, w0):
            h, w = self.size
            image = image.resize((w, h), Image.BILINEAR)  # Pillow antialiases when shrinking
            mask = np.asarray(Image.fromarray(mask, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
            centre = centre * np.array([w / w0, h / h0], dtype=np.float32)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {"image": pixels, "mask": torch.from_numpy(np.clip(mask, 0, 1))[None],
                "pupil_centre": torch.from_numpy(centre), "has_label": has_label, "filename": name, "index": index}
