"""CelebA in its published layout, loaded as the official LOMIT code does (reference/lomit.md §5.1).

    <root>/list_attr_celeba.txt      (or <root>/Anno/list_attr_celeba.txt)
    <root>/images/ | img_align_celeba/ | img_align_celeba/img_align_celeba/ | CelebA_nocrop/images/

list_attr_celeba.txt: line 1 the image count, line 2 the 40 attribute names, then one row per image,
`000001.jpg  -1  1  1 ...` with ±1 values.

Official behaviour, all configurable: centre crop 178 -> resize to the image size; random horizontal flips
for training; rows whose index + 1 < 2000 form the test split and the rest train; when hair-colour
attributes are selected, only images with at least one of the selected hair colours are kept.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lmt_train.data.folder import DatasetError, LabelledImages, check_files_exist, select_attributes, to_multi_hot

ATTRIBUTE_FILE = "list_attr_celeba.txt"
IMAGE_FOLDERS = ("images", "img_align_celeba/img_align_celeba", "img_align_celeba", "CelebA_nocrop/images",
                 "img_celeba")
HAIR_COLOUR_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
OFFICIAL_CROP = 178
OFFICIAL_TEST_ROWS = 1999   # the official loader: rows with index + 1 < 2000 are test
SPLITS = ("train", "test", "all")


@dataclass
class CelebAAttributes:
    names: list[str]
    filenames: list[str]
    values: np.ndarray       # (rows, attributes) int8 of ±1


def read_attribute_file(path: Path) -> CelebAAttributes:
    """Parse list_attr_celeba.txt; anything malformed raises DatasetError naming the line."""
    if not path.is_file():
        raise DatasetError(f"attribute file not found: {path}")
    lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 2:
        raise DatasetError(f"{path} is malformed: expected the image count, the attribute names and rows")
    if len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise DatasetError(f"{path} is malformed: line 1 must be the image count, got {' '.join(lines[0])!r}")
    count, names, rows = int(lines[0][0]), lines[1], lines[2:]
    if not names:
        raise DatasetError(f"{path} is malformed: line 2 must list the attribute names")
    if len(rows) != count:
        raise DatasetError(f"{path} is malformed: line 1 says {count} images, the file has {len(rows)} rows")
    filenames, values = [], np.empty((len(rows), len(names)), dtype=np.int8)
    for number, row in enumerate(rows):
        line = number + 3
        if len(row) != len(names) + 1:
            raise DatasetError(f"{path} line {line}: expected a file name and {len(names)} values, "
                               f"got {len(row)} fields")
        if any(v not in ("1", "-1") for v in row[1:]):
            raise DatasetError(f"{path} line {line}: attribute values must be 1 or -1")
        filenames.append(row[0])
        values[number] = [int(v) for v in row[1:]]
    return CelebAAttributes(names, filenames, values)


def find_layout(root: Path, image_dir: str | os.PathLike | None = None,
                attribute_file: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(image folder, attribute file) of a CelebA root; explicit paths win over the known layouts."""
    if not root.is_dir():
        raise DatasetError(f"CelebA folder not found: {root}")
    if attribute_file is not None:
        attr = Path(attribute_file)
    else:
        candidates = [root / ATTRIBUTE_FILE, root / "Anno" / ATTRIBUTE_FILE]
        attr = next((c for c in candidates if c.is_file()), None)
        if attr is None:
            raise DatasetError(f"{ATTRIBUTE_FILE} not found in {root} (looked for "
                               f"{', '.join(str(c.relative_to(root)) for c in candidates)})")
    if image_dir is not None:
        images = Path(image_dir)
    else:
        images = next((root / c for c in IMAGE_FOLDERS if (root / c).is_dir()), None)
        if images is None:
            raise DatasetError(f"no CelebA image folder in {root} (looked for {', '.join(IMAGE_FOLDERS)})")
    return images, attr


def split_rows(count: int, split: str, test_rows: int = OFFICIAL_TEST_ROWS) -> np.ndarray:
    """Boolean row selection of a split: the first `test_rows` rows are test, the rest train."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    is_test = np.arange(count) < test_rows
    return {"train": ~is_test, "test": is_test, "all": np.ones(count, dtype=bool)}[split]


def hair_rows(values: np.ndarray, names: Sequence[str], attributes: Sequence[str]) -> np.ndarray:
    """Rows with at least one of the selected hair colours (all rows when none is selected)."""
    selected = [a for a in attributes if a in HAIR_COLOUR_ATTRIBUTES]
    if not selected:
        return np.ones(len(values), dtype=bool)
    columns = [list(names).index(a) for a in selected]
    return (values[:, columns] > 0).any(axis=1)


class CelebA(LabelledImages):
    """CelebA images with multi-hot labels over the selected attributes.

    flip=None flips in the train split only; crop=None uses the official 178.
    """

    def __init__(self, root: str | os.PathLike, attributes: Sequence[str], image_size: int = 128,
                 split: str = "train", crop: int | None = None, flip: bool | None = None,
                 hair_filter: bool = True, test_rows: int = OFFICIAL_TEST_ROWS, seed: int = 0,
                 image_dir: str | os.PathLike | None = None, attribute_file: str | os.PathLike | None = None):
        images, attr_path = find_layout(Path(root), image_dir, attribute_file)
        table = read_attribute_file(attr_path)
        columns = select_attributes(table.names, attributes, attr_path.name)
        keep = split_rows(len(table.filenames), split, test_rows)
        if hair_filter:
            keep &= hair_rows(table.values, table.names, attributes)
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise DatasetError(f"the {split} split of {attr_path} is empty after filtering "
                               f"({len(table.filenames)} rows, test_rows={test_rows}, hair_filter={hair_filter})")
        filenames = [table.filenames[i] for i in rows]
        check_files_exist(images, filenames, attr_path.name)
        self.rows = rows  # row index in the attribute file of each item
        super().__init__(images, filenames, to_multi_hot(table.values[np.ix_(rows, columns)]), attributes,
                         image_size, OFFICIAL_CROP if crop is None else crop,
                         split == "train" if flip is None else flip, seed)
