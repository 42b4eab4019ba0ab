"""CelebA-layout and folder+CSV datasets, on real JPEG / PNG files written to disk.

The CelebA fixture renders 30 synthetic portraits at CelebA's 178x218 (width x height): the portrait fills
the central 178x178 square and 20-pixel red bands sit above and below it, exactly where the official
centre crop cuts, so the crop is checked by the absence of red.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmt_train.data.celeba import CelebA, read_attribute_file
from lmt_train.data.folder import AttributeFolder, DatasetError

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
ROWS = 30
HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


def _write_celeba(root: Path, rows: int = ROWS) -> np.ndarray:
    """Images + list_attr_celeba.txt under root; returns the (rows, 40) ±1 label table."""
    from lmt_train.data.synthetic import HAIR_ATTRIBUTES, render, sample_scene

    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(7)
    table = rng.choice(np.array([-1, 1], dtype=np.int8), size=(rows, len(CELEBA_ATTRIBUTES)))
    for row in range(rows):
        scene = sample_scene(rng)
        portrait = Image.fromarray(render(scene, 48).image).resize((178, 178), Image.BILINEAR)
        canvas = Image.new("RGB", (178, 218), (255, 0, 0))
        canvas.paste(portrait, (0, 20))
        canvas.save(images / f"{row + 1:06d}.jpg", quality=95)
        for name in HAIR:   # hair labels from the rendered hair colour (red hair: none of them)
            table[row, CELEBA_ATTRIBUTES.index(name)] = 1 if HAIR_ATTRIBUTES[scene.hair_colour] == name else -1
        table[row, CELEBA_ATTRIBUTES.index("Smiling")] = 1 if scene.smiling else -1
    lines = [str(rows), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{row + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in table[row]) for row in range(rows)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return table


@pytest.fixture(scope="module")
def celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    return root, _write_celeba(root)


def _column(table, name):
    return table[:, CELEBA_ATTRIBUTES.index(name)]


def _copy(celeba, tmp_path) -> Path:
    root = tmp_path / "celeba"
    shutil.copytree(celeba[0], root)
    return root


# -- CelebA ----------------------------------------------------------------------------------------

def test_celeba_items_and_labels(celeba):
    root, table = celeba
    attrs = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling")
    data = CelebA(root, attrs, image_size=32, split="all", hair_filter=False, flip=False)
    assert len(data) == ROWS
    item = data[3]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    expected = np.stack([_column(table, a) for a in attrs], axis=1) > 0
    labels = torch.stack([data[i]["labels"] for i in range(len(data))])
    assert labels.dtype == torch.float32 and torch.equal(labels, torch.from_numpy(expected.astype(np.float32)))


def test_celeba_centre_crop_178_removes_the_bands(celeba):
    root, _ = celeba
    data = CelebA(root, ["Smiling"], image_size=178, split="all", hair_filter=False, flip=False)
    decoded = np.asarray(Image.open(root / "images" / "000001.jpg").convert("RGB"))
    expected = torch.from_numpy(decoded[20:198].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(data[0]["image"], expected)                       # rows 20..197: torchvision's offsets
    # Resizing follows the crop: the 32x32 item is the crop resized bilinearly.
    small = CelebA(root, ["Smiling"], image_size=32, split="all", hair_filter=False, flip=False)[0]["image"]
    resized = Image.fromarray(decoded[20:198]).resize((32, 32), Image.BILINEAR)
    assert torch.equal(small, torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 127.5 - 1)
    red = (small[0] > 0.8) & (small[1] < -0.8) & (small[2] < -0.8)
    assert not red[[0, -1]].any()                                         # no band left at the top or bottom


def test_celeba_official_split_and_hair_filter(celeba):
    root, table = celeba
    hair = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling")
    test = CelebA(root, hair, 32, split="test", test_rows=10, hair_filter=False)
    train = CelebA(root, hair, 32, split="train", test_rows=10, hair_filter=False)
    assert list(test.rows) == list(range(10)) and list(train.rows) == list(range(10, ROWS))
    assert not test.flip and train.flip                                   # flips in train only by default
    filtered = CelebA(root, hair, 32, split="all", hair_filter=True)
    keep = (np.stack([_column(table, a) for a in hair[:3]], axis=1) > 0).any(axis=1)
    assert 0 < len(filtered) < ROWS and list(filtered.rows) == list(np.flatnonzero(keep))
    blond = CelebA(root, ["Blond_Hair", "Smiling"], 32, split="all")
    assert list(blond.rows) == list(np.flatnonzero(_column(table, "Blond_Hair") > 0))
    assert len(CelebA(root, ["Smiling", "Male"], 32, split="all")) == ROWS  # no hair colour selected: no filter
    with pytest.raises(DatasetError, match="train split .* is empty"):    # the official 1999 test rows take all 30
        CelebA(root, hair, 32, split="train")


def test_celeba_flips_are_deterministic_per_epoch(celeba):
    root, _ = celeba
    plain = CelebA(root, ["Smiling"], 32, split="all", hair_filter=False, flip=False)
    one = CelebA(root, ["Smiling"], 32, split="all", hair_filter=False, flip=True, seed=3)
    two = CelebA(root, ["Smiling"], 32, split="all", hair_filter=False, flip=True, seed=3)
    flipped = []
    for i in range(ROWS):
        a, b, base = one[i]["image"], two[i]["image"], plain[i]["image"]
        assert torch.equal(a, b)
        assert torch.equal(a, base) or torch.equal(a, base.flip(-1))
        flipped.append(not torch.equal(a, base))
    assert 5 < sum(flipped) < ROWS - 5
    one.set_epoch(1)
    assert [one.flipped(i) for i in range(ROWS)] != flipped


def test_celeba_layouts(celeba, tmp_path):
    root = tmp_path / "official"
    (root / "Anno").mkdir(parents=True)
    shutil.copy(celeba[0] / "list_attr_celeba.txt", root / "Anno")
    shutil.copytree(celeba[0] / "images", root / "img_align_celeba")
    assert len(CelebA(root, ["Smiling"], 32, split="all", hair_filter=False)) == ROWS


def test_celeba_errors(celeba, tmp_path):
    with pytest.raises(DatasetError, match="CelebA folder not found: .*missing"):
        CelebA(tmp_path / "missing", ["Smiling"], 32)
    with pytest.raises(DatasetError, match="list_attr_celeba.txt not found in"):
        CelebA(tmp_path, ["Smiling"], 32)
    root = _copy(celeba, tmp_path)
    with pytest.raises(DatasetError) as info:
        CelebA(root, ["Smiling", "Purple_Hair"], 32, split="all")
    message = str(info.value)
    assert "'Purple_Hair' not in list_attr_celeba.txt" in message and "Blond_Hair" in message and "\n" not in message
    (root / "images" / "000017.jpg").unlink()
    with pytest.raises(DatasetError, match="1 image file.* missing from .*images: 000017.jpg"):
        CelebA(root, ["Smiling"], 32, split="all")
    assert len(CelebA(root, ["Smiling"], 32, split="test", test_rows=10)) == 10   # the test split is whole


@pytest.mark.parametrize("edit, message", [
    (lambda lines: ["thirty"] + lines[1:], "line 1 must be the image count"),
    (lambda lines: ["31"] + lines[1:], "line 1 says 31 images, the file has 30 rows"),
    (lambda lines: lines[:5] + [lines[5].rsplit(" ", 1)[0]] + lines[6:], "line 6: expected a file name and 40 values"),
    (lambda lines: lines[:4] + [lines[4].replace(" 1", " 2", 1)] + lines[5:], "line 5: attribute values must be 1 or -1"),
    (lambda lines: lines[:1], "expected the image count, the attribute names and rows"),
])
def test_celeba_malformed_attribute_file(celeba, tmp_path, edit, message):
    path = tmp_path / "list_attr_celeba.txt"
    lines = (celeba[0] / "list_attr_celeba.txt").read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(DatasetError, match="malformed|line") as info:
        read_attribute_file(path)
    assert message in str(info.value)


# -- image folder + CSV ----------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    names = [f"img{i}.png" for i in range(6)] + ["sub/nested.png"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / name)   # 40 wide, 30 high
    rows = ["filename,Black_Hair,Blond_Hair,Smiling"]
    values = rng.integers(0, 2, (len(names), 3))
    rows += [f"{n},{a},{b},{c}" for n, (a, b, c) in zip(names, values)]
    (root / "attributes.csv").write_text("\n".join(rows) + "\n")
    return root, names, values


def test_folder_items_labels_and_square_crop(folder):
    root, names, values = folder
    data = AttributeFolder(root, ["Smiling", "Black_Hair"], image_size=30, flip=False)
    assert len(data) == len(names)
    assert torch.equal(data[6]["labels"], torch.tensor([values[6][2], values[6][0]], dtype=torch.float32))
    decoded = np.asarray(Image.open(root / names[2]))
    expected = torch.from_numpy(decoded[:, 5:35].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(data[2]["image"], expected)                        # the largest centred square
    assert AttributeFolder(root, ["Smiling"], image_size=16)[0]["image"].shape == (3, 16, 16)


def test_folder_accepts_plus_minus_one(folder, tmp_path):
    root, names, values = folder
    csv = tmp_path / "pm.csv"
    csv.write_text("file,Smiling\n" + "".join(f"{n},{1 if v[2] else -1}\n" for n, v in zip(names, values)))
    data = AttributeFolder(root, ["Smiling"], 16, csv_path=csv)
    assert [float(data[i]["labels"][0]) for i in range(len(data))] == [float(v[2]) for v in values]


def test_folder_errors(folder, tmp_path):
    root, names, _ = folder
    with pytest.raises(DatasetError, match="image folder not found: .*nope"):
        AttributeFolder(tmp_path / "nope", ["Smiling"], 16)
    with pytest.raises(DatasetError, match="attribute CSV not found: .*other.csv"):
        AttributeFolder(root, ["Smiling"], 16, csv_path=root / "other.csv")
    with pytest.raises(DatasetError, match="'Male' not in attributes.csv; available: Black_Hair, Blond_Hair, Smiling"):
        AttributeFolder(root, ["Male"], 16)
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,Smiling\nimg0.png,3\n")
    with pytest.raises(DatasetError, match="bad.csv line 2: attribute values must be 0/1 or -1/1"):
        AttributeFolder(root, ["Smiling"], 16, csv_path=bad)
    bad.write_text("filename,Smiling\nimg0.png,1,0\n")
    with pytest.raises(DatasetError, match="line 2: 3 columns, the header has 2"):
        AttributeFolder(root, ["Smiling"], 16, csv_path=bad)
    (root / names[1]).unlink()
    with pytest.raises(DatasetError, match="1 image file.* missing .*img1.png"):
        AttributeFolder(root, ["Smiling"], 16)


def test_unreadable_image_names_the_file(folder):
    root, names, _ = folder
    (root / names[0]).write_bytes(b"not an image")
    data = AttributeFolder(root, ["Smiling"], 16)
    with pytest.raises(DatasetError, match="img0.png"):
        data[0]


def test_trainer_reads_celeba(celeba, tmp_path):
    """The trainer's dataset factory builds CelebA from a DataConfig (the official split on 30 rows)."""
    from lmt_train.config import load_config
    from lmt_train.trainer import build_dataset

    cfg = load_config(None, ["data.kind=celeba", f'data.path="{celeba[0]}"', "data.split=test"])
    data = build_dataset(cfg.data, 32, seed=0)
    assert len(data) > 0 and not data.flip and data[0]["image"].shape == (3, 32, 32)
