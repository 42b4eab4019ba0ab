"""Tests for the procedural portrait test bed (lmt_train.data.synthetic)."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmt_train.data.synthetic import (
    ATTRIBUTES,
    HAIR_ATTRIBUTES,
    HAIR_COLOURS,
    SMILING,
    SyntheticPairs,
    SyntheticPortraits,
    make_translation_pair,
    render,
    sample_scene,
    save_sample_images,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def scenes(count, seed=0, hair_colours=None):
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, hair_colours) for _ in range(count)]


@pytest.fixture(scope="module")
def batch64():
    return [(scene, render(scene, 64)) for scene in scenes(40, seed=1)]


def mean_hair(rendered):
    return rendered.image[rendered.hair_mask > 0.99].astype(float).mean(0)


def other_colour(colour):
    return next(name for name in HAIR_COLOURS if name != colour)


# ---------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_samples():
    first, second = SyntheticPortraits(size=32, seed=3), SyntheticPortraits(size=32, seed=3)
    a, b = first[5], second[5]
    for key in ("image", "labels", "hair_mask", "face_mask", "background_mask"):
        assert torch.equal(a[key], b[key]), key


def test_different_index_seed_or_split_give_different_images():
    dataset = SyntheticPortraits(size=32, seed=3)
    image = dataset[5]["image"]
    assert not torch.equal(image, dataset[6]["image"])
    assert not torch.equal(image, SyntheticPortraits(size=32, seed=4)[5]["image"])
    assert not torch.equal(image, SyntheticPortraits(size=32, seed=3, split="test")[5]["image"])


def test_render_is_a_pure_function_of_the_scene():
    scene = scenes(1, seed=9)[0]
    a, b = render(scene, 48), render(scene, 48)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.hair_mask, b.hair_mask)


# ---------------------------------------------------------------- masks


def test_masks_are_weights_that_partition_each_pixel(batch64):
    for _, rendered in batch64:
        masks = (rendered.hair_mask, rendered.face_mask, rendered.background_mask)
        for mask in masks:
            assert mask.dtype == np.float32 and mask.shape == (64, 64)
            assert mask.min() >= 0.0 and mask.max() <= 1.0
        np.testing.assert_allclose(sum(masks), 1.0, atol=1e-5)
        assert rendered.image.dtype == np.uint8 and rendered.image.shape == (64, 64, 3)


def test_every_region_is_present_and_hair_is_a_plausible_fraction(batch64):
    hair_fractions = []
    for _, rendered in batch64:
        for mask in (rendered.hair_mask, rendered.face_mask, rendered.background_mask):
            assert (mask > 0.5).sum() >= 20
        hair_fractions.append(rendered.hair_mask.mean())
        assert 0.03 <= hair_fractions[-1] <= 0.6
    assert 0.05 <= np.mean(hair_fractions) <= 0.6


def test_face_mask_covers_the_face_centre_and_background_the_corners(batch64):
    for scene, rendered in batch64:
        cx, cy = scene.centre
        row, col = int((cy + 1) * 32), int((cx + 1) * 32)
        assert rendered.face_mask[row, col] == pytest.approx(1.0)
    corners = [r.background_mask[0, 0] + r.background_mask[0, -1] for _, r in batch64]
    assert np.mean(corners) > 1.8


def test_masks_agree_across_resolutions():
    for scene in scenes(12, seed=2):
        small = render(scene, 32)
        large = render(scene, 128)
        for name in ("hair_mask", "face_mask"):
            downsampled = getattr(large, name).reshape(32, 4, 32, 4).mean(axis=(1, 3))
            a, b = getattr(small, name) > 0.5, downsampled > 0.5
            iou = (a & b).sum() / max((a | b).sum(), 1)
            assert iou > 0.8, (name, iou)


# ---------------------------------------------------------------- ground truth


def test_another_hair_colour_changes_only_hair_pixels(batch64):
    for scene, rendered in batch64:
        recoloured = render(scene, 64, hair_colour=other_colour(scene.hair_colour))
        no_hair = rendered.hair_mask == 0
        assert np.array_equal(rendered.image[no_hair], recoloured.image[no_hair])
        for name in ("hair_mask", "face_mask", "background_mask"):
            assert np.array_equal(getattr(rendered, name), getattr(recoloured, name))
        # The hair region's mean colour must move noticeably.
        hair = rendered.hair_mask > 0.5
        shift = np.abs(
            rendered.image[hair].astype(float).mean(0) - recoloured.image[hair].astype(float).mean(0)
        ).max()
        assert shift > 15, (scene.hair_colour, shift)
        assert recoloured.labels[HAIR_ATTRIBUTES[recoloured.hair_colour]] == 1.0


def test_hair_has_texture_not_a_flat_colour(batch64):
    for _, rendered in batch64:
        hair = rendered.image[rendered.hair_mask == 1].astype(float)
        assert hair.std(axis=0).max() > 4


def test_translation_pair_target_takes_the_exemplar_colour():
    for seed in range(6):
        pair = make_translation_pair(seed, 64)
        assert pair.input_scene.hair_colour != pair.exemplar_scene.hair_colour
        assert pair.target.hair_colour == pair.exemplar.hair_colour
        recoloured = pair.input_scene.with_hair_colour_of(pair.exemplar_scene)
        np.testing.assert_array_equal(recoloured.hair_rgb(), pair.exemplar_scene.hair_rgb())
        no_hair = pair.input.hair_mask == 0
        assert np.array_equal(pair.target.image[no_hair], pair.input.image[no_hair])
        assert np.array_equal(pair.target.hair_mask, pair.input.hair_mask)
        # The target's hair is closer in colour to the exemplar's hair than the input's was.
        exemplar = mean_hair(pair.exemplar)
        distance_before = np.linalg.norm(mean_hair(pair.input) - exemplar)
        assert np.linalg.norm(mean_hair(pair.target) - exemplar) < distance_before


# ---------------------------------------------------------------- variety


def test_scenes_are_varied():
    sample = scenes(50, seed=4)
    assert len({s.hair_colour for s in sample}) >= 4
    assert {s.smiling for s in sample} == {True, False}
    assert len({s.background_kind for s in sample}) >= 4
    assert np.std([s.roll for s in sample]) > 0.05
    assert np.std([s.hair_length for s in sample]) > 0.3
    stds = [render(s, 32).image.std() for s in sample[:20]]
    assert len({round(float(v), 3) for v in stds}) == len(stds)


def test_hair_colour_choice_can_be_restricted():
    chosen = ("blond", "red")
    assert {s.hair_colour for s in scenes(30, hair_colours=chosen)} == set(chosen)
    with pytest.raises(ValueError):
        sample_scene(np.random.default_rng(0), ["purple"])


# ---------------------------------------------------------------- datasets


def test_portrait_dataset_items_have_the_documented_format():
    dataset = SyntheticPortraits(size=48, length=7, seed=0)
    assert len(dataset) == 7
    item = dataset[3]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    for key in ("hair_mask", "face_mask", "background_mask"):
        assert item[key].shape == (1, 48, 48) and item[key].dtype == torch.float32
    assert item["labels"].shape == (4,) and item["labels"].dtype == torch.float32
    assert item["index"] == 3
    with pytest.raises(IndexError):
        dataset[7]


def test_portrait_labels_match_the_scene():
    attributes = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling")
    dataset = SyntheticPortraits(size=32, length=30, seed=5, attributes=attributes)
    for index in range(len(dataset)):
        scene, labels = dataset.scene(index), dataset[index]["labels"]
        assert scene.hair_colour in ("black", "blond", "brown")  # only the chosen hair colours
        expected = [float(scene.hair_attribute == name) for name in attributes[:3]] + [float(scene.smiling)]
        assert labels.tolist() == expected
        assert labels[:3].sum() == 1


def test_unknown_attribute_or_split_is_rejected():
    with pytest.raises(ValueError):
        SyntheticPortraits(attributes=("Wearing_Hat",))
    with pytest.raises(ValueError):
        SyntheticPortraits(split="holdout")


def test_portrait_dataset_batches_with_a_dataloader():
    loader = torch.utils.data.DataLoader(SyntheticPortraits(size=32, length=8), batch_size=4, num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["hair_mask"].shape == (4, 1, 32, 32)
    assert batch["labels"].shape == (4, 4)
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_pairs_dataset_gives_consistent_triples():
    dataset = SyntheticPairs(size=32, length=4, seed=1, attributes=("Black_Hair", "Blond_Hair", "Smiling"))
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    for role in ("input", "exemplar", "target"):
        assert batch[role].shape == (4, 3, 32, 32)
        assert batch[f"{role}_hair_mask"].shape == (4, 1, 32, 32)
    assert torch.equal(batch["target_hair_mask"], batch["input_hair_mask"])
    # Target takes the exemplar's hair label and keeps the input's smile.
    assert torch.equal(batch["target_labels"][:, :2], batch["exemplar_labels"][:, :2])
    assert torch.equal(batch["target_labels"][:, 2], batch["input_labels"][:, 2])
    assert not torch.equal(batch["input_labels"][:, :2], batch["exemplar_labels"][:, :2])
    outside = batch["input_hair_mask"].expand(-1, 3, -1, -1) == 0
    assert torch.equal(batch["target"][outside], batch["input"][outside])


def test_pairs_need_two_hair_colours():
    with pytest.raises(ValueError):
        SyntheticPairs(attributes=("Blond_Hair", "Smiling"))


def test_all_attributes_are_labelled():
    labels = render(scenes(1)[0], 16).labels
    assert tuple(labels) == ATTRIBUTES
    assert sum(labels[name] for name in HAIR_ATTRIBUTES.values()) == 1.0
    assert labels[SMILING] in (0.0, 1.0)


# ---------------------------------------------------------------- files


def test_save_sample_images_writes_pngs(tmp_path):
    paths = save_sample_images(str(tmp_path), n=2, size=32, seed=0)
    assert len(paths) == 6
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (32, 32) and image.mode == "RGB"


def test_preview_cli_writes_a_png(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lmt_train.data.synthetic", "--out", str(tmp_path), "-n", "3", "--size", "32"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.mode == "RGB"
        assert image.size == (4 * 32 + 3 * 2, 3 * 32 + 2 * 2)
    assert "RuntimeWarning" not in result.stderr


def test_render_is_fast():
    # Not a benchmark, a guard against accidental per-pixel Python loops.
    sample = scenes(10, seed=7)
    render(sample[0], 128)
    start = time.perf_counter()
    for scene in sample:
        render(scene, 128)
    assert (time.perf_counter() - start) / len(sample) < 0.05
