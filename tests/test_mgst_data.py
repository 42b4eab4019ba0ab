"""Procedural eyes (determinism, ground truth, shared geometry) and the real-eye folder loader."""
import numpy as np
import pytest
import torch
from PIL import Image

from lmt_train.data.eye_folder import EyeFolder
from lmt_train.data.eyes import SyntheticEyes, denormalise_centre, normalise_centre, render_eye, sample_eye
from lmt_train.data.folder import DatasetError


def test_items_are_deterministic_per_seed_split_index():
    a = SyntheticEyes(6, seed=3, split="train", rendering="both", cache=False)
    b = SyntheticEyes(6, seed=3, split="train", rendering="both", cache=True)
    for i in (0, 5, 2):
        x, y = a[i], b[i]
        for key in ("synthetic", "real", "mask", "pupil_mask", "pupil_centre", "gaze"):
            assert torch.equal(x[key], y[key]), key
    assert torch.equal(b[2]["real"], b[2]["real"])  # cached copy returned unchanged
    other_seed = SyntheticEyes(6, seed=4, rendering="both", cache=False)[0]
    other_split = SyntheticEyes(6, seed=3, split="test", rendering="both", cache=False)[0]
    assert not torch.equal(a[0]["pupil_centre"], other_seed["pupil_centre"])
    assert not torch.equal(a[0]["pupil_centre"], other_split["pupil_centre"])
    with pytest.raises(IndexError):
        a[6]
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticEyes(2, split="dev")


def test_ground_truth_is_consistent():
    data = SyntheticEyes(40, seed=0, split="test", rendering="both", cache=False)
    for i in range(len(data)):
        item = data[i]
        cx, cy = (int(v) for v in torch.floor(item["pupil_centre"]))
        pupil, att, eye = item["pupil_mask"][0], item["mask"][0], item["eye_mask"][0]
        assert pupil[cy, cx] > 0.5, f"eye {i}: pupil centre ({cx}, {cy}) outside the visible pupil"
        assert torch.all(pupil <= att + 1e-6) and torch.all(att <= eye + 1e-6)
        assert torch.equal(item["mask"], item["iris_mask"])
        assert 0 < att.sum() < 0.5 * att.numel()
        # the clean rendering is dark at the pupil centre (pupil albedo 0.05), the skin is not
        assert item["synthetic"][:, cy, cx].mean() < -0.75
        # the label is the centroid of the full pupil disc, so the visible pupil's centroid is close to it
        ys, xs = torch.meshgrid(torch.arange(36) + 0.5, torch.arange(60) + 0.5, indexing="ij")
        if (pupil > 0).sum() > 0 and eye[cy - 2:cy + 3, cx - 2:cx + 3].min() > 0.99:
            centroid = torch.stack([(pupil * xs).sum(), (pupil * ys).sum()]) / pupil.sum()
            assert (centroid - item["pupil_centre"]).norm() < 1.5


def test_synthetic_and_real_renderings_share_geometry():
    syn = SyntheticEyes(5, seed=1, rendering="synthetic", cache=False)
    real = SyntheticEyes(5, seed=1, rendering="real", cache=False)
    for i in range(5):
        a, b = syn[i], real[i]
        for key in ("mask", "pupil_mask", "eye_mask", "pupil_centre", "gaze"):
            assert torch.equal(a[key], b[key]), key
        assert (a["image"] - b["image"]).abs().mean() > 0.05  # the camera really changes the pixels


def test_other_sizes_scale_the_same_eye():
    eye = sample_eye(np.random.default_rng(0))
    small, large = render_eye(eye, (36, 60)), render_eye(eye, (72, 120))
    np.testing.assert_allclose(large.pupil_centre, 2 * small.pupil_centre)
    assert abs(large.mask.sum() / 4 - small.mask.sum()) < 0.05 * small.mask.sum()
    with pytest.raises(ValueError, match="36:60"):
        render_eye(eye, (40, 60))
    c = torch.tensor([[0.0, 0.0], [60.0, 36.0], [30.0, 18.0]])
    assert torch.allclose(normalise_centre(c, (36, 60)), torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(denormalise_centre(normalise_centre(c, (36, 60)), (36, 60)), c)


# -- the folder loader ------------------------------------------------------------------------------

def _write_folder(root, count=3, size=(48, 80), labels=True, mask_values=(0, 255)):
    """Frames rendered by the procedural generator, written as real PNG files."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    data = SyntheticEyes(count, seed=7, size=size, rendering="real", cache=False)
    rows = ["filename,pupil_x,pupil_y"]
    truth = {}
    for i in range(count):
        s = data.sample(i)
        name = f"frame_{i:03d}.png"
        Image.fromarray(np.round(s.real * 255).astype(np.uint8)).save(root / "images" / name)
        mask = np.where(s.mask > 0.5, mask_values[1], mask_values[0]).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(root / "masks" / name)
        rows.append(f"{name},{s.pupil_centre[0]:.4f},{s.pupil_centre[1]:.4f}")
        truth[name] = (s.pupil_centre, s.mask)
    if labels:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return truth


def test_folder_loads_images_masks_and_labels(tmp_path):
    truth = _write_folder(tmp_path)
    data = EyeFolder(tmp_path, size=(36, 60))
    assert len(data) == 3
    item = data[1]
    assert item["image"].shape == (3, 36, 60) and item["mask"].shape == (1, 36, 60)
    assert item["image"].min() >= -1 and item["image"].max() <= 1 and item["has_label"]
    centre, mask = truth[item["filename"]]
    np.testing.assert_allclose(item["pupil_centre"].numpy(), centre * 0.75, rtol=1e-4)  # 48x80 -> 36x60
    cx, cy = (int(v) for v in item["pupil_centre"])
    assert item["mask"][0, cy, cx] > 0.5
    native = EyeFolder(tmp_path, size=None)[1]
    assert native["image"].shape == (3, 48, 80)
    np.testing.assert_allclose(native["mask"][0].numpy(), (mask > 0.5).astype(np.float32))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, 36, 60)


def test_folder_without_labels_and_with_label_maps(tmp_path):
    _write_folder(tmp_path, labels=False, mask_values=(1, 3))  # a label map: 1 = rest, 3 = iris/pupil
    item = EyeFolder(tmp_path, attention_labels=(2, 3))[0]
    assert not item["has_label"] and torch.isnan(item["pupil_centre"]).all()
    assert 0 < item["mask"].sum() < item["mask"].numel() / 2
    with pytest.raises(DatasetError, match="labels are required"):
        EyeFolder(tmp_path, require_labels=True)


@pytest.mark.parametrize("breakage, message", [
    ("no_masks_dir", "has no masks/ folder"),
    ("missing_mask", r"1 image\(s\) .* have no mask .*frame_001.png"),
    ("mask_size", r"mask .*frame_000.png is 20x10 but its image frame_000.png is 80x48"),
    ("bad_header", "the header must start with 'filename,pupil_x,pupil_y'"),
    ("not_a_number", "line 2: pupil_x and pupil_y must be numbers"),
    ("unknown_file", "'ghost.png' is not an image in the images folder"),
    ("outside", r"pupil centre \(500, 10\) of frame_000.png lies outside its 80x48 image"),
    ("corrupt_image", "frame_002.png"),
    ("empty", "no images"),
])
def test_folder_errors_name_the_problem(tmp_path, breakage, message):
    _write_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    if breakage == "no_masks_dir":
        for p in (tmp_path / "masks").iterdir():
            p.unlink()
        (tmp_path / "masks").rmdir()
    elif breakage == "missing_mask":
        (tmp_path / "masks" / "frame_001.png").unlink()
    elif breakage == "mask_size":
        Image.new("L", (20, 10)).save(tmp_path / "masks" / "frame_000.png")
    elif breakage == "bad_header":
        csv.write_text("name,x,y\nframe_000.png,1,2\n")
    elif breakage == "not_a_number":
        csv.write_text("filename,pupil_x,pupil_y\nframe_000.png,left,2\n")
    elif breakage == "unknown_file":
        csv.write_text("filename,pupil_x,pupil_y\nghost.png,1,2\n")
    elif breakage == "outside":
        csv.write_text("filename,pupil_x,pupil_y\nframe_000.png,500,10\n")
    elif breakage == "corrupt_image":
        (tmp_path / "images" / "frame_002.png").write_bytes(b"not a png")
    elif breakage == "empty":
        for p in (tmp_path / "images").iterdir():
            p.unlink()
    with pytest.raises(DatasetError, match=message):
        data = EyeFolder(tmp_path)
        for i in range(len(data)):
            data[i]
    with pytest.raises(DatasetError, match="eye folder not found"):
        EyeFolder(tmp_path / "nowhere")
