"""Labelled images on disk: an image folder plus a CSV of attributes, and the base class that CelebA shares.

CSV layout (a header row, then one row per image; the first column names the file, relative to the
image folder):

    filename,Black_Hair,Blond_Hair,Smiling
    0001.jpg,1,0,1
    0002.jpg,-1,1,-1

Values are 0/1 or -1/+1 (CelebA's convention); -1 and 0 both mean "absent".

Every item is {"image": (3, S, S) float32 in [-1, 1], "labels": (A,) float32 multi-hot, "index": int}.
Pre-processing: centre crop (a given side, or the largest centred square), resize to S×S (bilinear,
antialiased), then an optional horizontal flip. Flips are drawn from (seed, epoch, index) rather than
from a global generator, so an item looks the same in any worker and after resuming a run; the trainer
calls `set_epoch` before each pass.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_CSV = "attributes.csv"


class DatasetError(ValueError):
    """A dataset that cannot be used (missing files, malformed labels, unknown attributes)."""


class LabelledImages(Dataset):
    """Image files with multi-hot labels, centre-cropped, resized and optionally flipped."""

    def __init__(self, image_dir: str | os.PathLike, filenames: Sequence[str], labels: np.ndarray,
                 attributes: Sequence[str], image_size: int, crop: int | None = None, flip: bool = False,
                 seed: int = 0):
        self.image_dir = Path(image_dir)
        self.filenames = list(filenames)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
        self.attributes = tuple(attributes)
        self.image_size = int(image_size)
        self.crop = crop
        self.flip = flip
        self.seed = int(seed)
        self.epoch = 0
        if self.labels.shape != (len(self.filenames), len(self.attributes)):
            raise ValueError(f"labels of shape {tuple(self.labels.shape)} do not fit {len(self.filenames)} "
                             f"files and {len(self.attributes)} attributes")

    def __len__(self) -> int:
        return len(self.filenames)

    def set_epoch(self, epoch: int) -> None:
        """Choose the flips of this pass over the data."""
        self.epoch = int(epoch)

    def flipped(self, index: int) -> bool:
        return self.flip and bool(np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5)

    def __getitem__(self, index: int) -> dict:
        path = self.image_dir / self.filenames[index]
        image = crop_and_resize(read_rgb(path), self.image_size, self.crop)
        array = np.array(image, dtype=np.uint8)  # a writable copy
        if self.flipped(index):
            array = array[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {"image": tensor, "labels": self.labels[index], "index": index}


def read_rgb(path: Path):
    """An RGB PIL image; a file that cannot be read raises DatasetError naming it."""
    from lmt_fast.io import ImageError, load_image

    try:
        image, _ = load_image(path)
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    return image


def crop_and_resize(image, size: int, crop: int | None = None):
    """Centre crop (side `crop`, or the largest square) then resize to size×size.

    The crop offsets round like torchvision's CenterCrop, so CelebA's 178×218 images crop as in the
    official loader.
    """
    from PIL import Image

    width, height = image.size
    side = min(width, height) if crop is None else int(crop)
    if side > width or side > height:
        raise DatasetError(f"cannot centre-crop {side}x{side} from a {width}x{height} image; "
                           "set data.crop smaller (or leave it unset for the largest square)")
    left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
    if (side, side) != (width, height):
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.BILINEAR)  # Pillow antialiases when shrinking
    return image


# -- attribute handling shared by the loaders -------------------------------------------------------

def select_attributes(available: Sequence[str], wanted: Sequence[str], source: str) -> list[int]:
    """Column indices of `wanted` in `available`; an unknown name raises DatasetError listing them."""
    unknown = [name for name in wanted if name not in available]
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise DatasetError(f"attribute{'s' if len(unknown) > 1 else ''} {names} not in {source}; "
                           f"available: {', '.join(available)}")
    return [list(available).index(name) for name in wanted]


def check_files_exist(image_dir: Path, filenames: Sequence[str], source: str) -> None:
    """Every listed file must be in the folder (one directory listing, not one stat per file)."""
    if not image_dir.is_dir():
        raise DatasetError(f"image folder not found: {image_dir}")
    nested = any("/" in name or os.sep in name for name in filenames)
    if nested:
        missing = [name for name in filenames if not (image_dir / name).is_file()]
    else:
        present = set(os.listdir(image_dir))
        missing = [name for name in filenames if name not in present]
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
        raise DatasetError(f"{len(missing)} image file(s) listed in {source} are missing from {image_dir}: {shown}")


def to_multi_hot(values: np.ndarray) -> np.ndarray:
    """-1/0 -> 0, 1 -> 1, as float32."""
    return (values > 0).astype(np.float32)


# -- image folder + CSV ----------------------------------------------------------------------------

def read_attribute_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(filenames, attribute names, values as int8) of an attribute CSV; malformed rows raise DatasetError."""
    if not path.is_file():
        raise DatasetError(f"attribute CSV not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError(f"{path} is empty; expected a header 'filename,attr1,attr2,...'")
    header = [cell.strip() for cell in rows[0]]
    if len(header) < 2:
        raise DatasetError(f"{path}: the header must be 'filename,attr1,...' with at least one attribute")
    names = header[1:]
    filenames, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path} line {line}: {len(row)} columns, the header has {len(header)}")
        try:
            numbers = [int(float(cell)) for cell in row[1:]]
        except ValueError:
            raise DatasetError(f"{path} line {line}: attribute values must be 0/1 or -1/1, got {row[1:]}") from None
        if any(v not in (-1, 0, 1) for v in numbers):
            raise DatasetError(f"{path} line {line}: attribute values must be 0/1 or -1/1, got {row[1:]}")
        filenames.append(row[0].strip())
        values.append(numbers)
    if not filenames:
        raise DatasetError(f"{path} lists no images")
    return filenames, names, np.asarray(values, dtype=np.int8).reshape(len(filenames), len(names))


class AttributeFolder(LabelledImages):
    """An image folder with an attribute CSV (default: <folder>/attributes.csv)."""

    def __init__(self, root: str | os.PathLike, attributes: Sequence[str], image_size: int,
                 csv_path: str | os.PathLike | None = None, crop: int | None = None, flip: bool = True,
                 seed: int = 0):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"image folder not found: {root}")
        csv_path = Path(csv_path) if csv_path else root / DEFAULT_CSV
        filenames, names, values = read_attribute_csv(csv_path)
        columns = select_attributes(names, attributes, csv_path.name)
        check_files_exist(root, filenames, csv_path.name)
        super().__init__(root, filenames, to_multi_hot(values[:, columns]), attributes, image_size, crop, flip, seed)
