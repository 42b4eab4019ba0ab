"""Purifier (inputs, outputs, errors), the embedded model, and `lmt-fast purify`."""
import numpy as np
import pytest
import torch
from PIL import Image

from lmt_fast.models.mgst import MGSTConfig, MGSTGenerator, save_mgst_checkpoint
from lmt_fast.purifier import DEFAULT_MODEL, Purifier, PurifierError, PurifierStyle
from lmt_train.data.eyes import SyntheticEyes


@pytest.fixture(scope="module")
def eyes():
    """Two procedural eyes: uint8 HxWx3 real images, uint8 masks, float synthetic tensors and masks."""
    data = SyntheticEyes(2, seed=11, split="test", rendering="both", cache=False)
    out = []
    for i in range(2):
        s = data.sample(i)
        out.append({"real": np.round(s.real * 255).astype(np.uint8),
                    "mask": np.where(s.mask > 0.5, 255, 0).astype(np.uint8),
                    "synthetic": np.round(s.synthetic * 255).astype(np.uint8)})
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, eyes):
    torch.manual_seed(5)
    g = MGSTGenerator(MGSTConfig.small()).eval()
    x = torch.from_numpy(eyes[1]["synthetic"]).permute(2, 0, 1)[None].float() / 127.5 - 1
    m = torch.from_numpy(eyes[1]["mask"])[None, None].float() / 255
    with torch.no_grad():
        g.set_stored_style(g.style_from_image(x, m), 1)
    path = tmp_path_factory.mktemp("mgst") / "ckpt"
    save_mgst_checkpoint(g, path)
    return path


@pytest.fixture
def files(tmp_path, eyes):
    paths = {}
    for key, array, mode in (("image", eyes[0]["real"], "RGB"), ("mask", eyes[0]["mask"], "L"),
                             ("style", eyes[1]["synthetic"], "RGB"), ("style_mask", eyes[1]["mask"], "L")):
        paths[key] = tmp_path / f"{key}.png"
        Image.fromarray(array, mode=mode).save(paths[key])
    paths["big"] = tmp_path / "big.png"
    Image.fromarray(eyes[0]["real"]).resize((120, 72), Image.BILINEAR).save(paths["big"])
    return paths


def test_every_input_kind_gives_the_same_result(checkpoint, eyes, files):
    p = Purifier.load(checkpoint)
    image, mask = eyes[0]["real"], eyes[0]["mask"]
    from_array = p.purify(image, mask)
    assert isinstance(from_array.image, np.ndarray) and from_array.image.shape == (36, 60, 3)
    assert from_array.image.dtype == np.uint8 and from_array.notes == []
    from_path = p.purify(str(files["image"]), files["mask"])
    assert isinstance(from_path.image, Image.Image) and from_path.image.size == (60, 36)
    np.testing.assert_array_equal(np.asarray(from_path.image), from_array.image)
    from_pil = p.purify(Image.fromarray(image), Image.fromarray(mask))
    np.testing.assert_array_equal(np.asarray(from_pil.image), from_array.image)
    t = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    from_tensor = p.purify(t, torch.from_numpy(mask).float() / 255)
    assert from_tensor.image.shape == (3, 36, 60) and from_tensor.image.dtype == torch.float32
    expected = torch.from_numpy(from_array.image).permute(2, 0, 1).float() / 127.5 - 1
    assert (from_tensor.image - expected).abs().max() <= 1 / 127.5 + 1e-6
    bool_mask = p.purify(image, mask > 127)
    np.testing.assert_array_equal(bool_mask.image, from_array.image)
    # the purification is not the identity
    assert np.abs(from_array.image.astype(int) - image.astype(int)).mean() > 5


def test_batch_equals_one_by_one(checkpoint, eyes):
    p = Purifier.load(checkpoint)
    images, masks = [e["real"] for e in eyes], [e["mask"] for e in eyes]
    batch = p.purify_batch(images, masks)
    for r, image, mask in zip(batch, images, masks):
        assert np.abs(r.image.astype(int) - p.purify(image, mask).image.astype(int)).max() <= 1


def test_style_image_path(checkpoint, eyes, files):
    """The checkpoint stores eye 1's synthetic style, so giving that image as the style changes nothing."""
    p = Purifier.load(checkpoint)
    stored = p.purify(eyes[0]["real"], eyes[0]["mask"]).image
    style = p.encode_style(files["style"], files["style_mask"])
    assert isinstance(style, PurifierStyle)
    same = p.purify(eyes[0]["real"], eyes[0]["mask"], style=style).image
    assert np.abs(same.astype(int) - stored.astype(int)).max() <= 1
    other = p.purify(eyes[0]["real"], eyes[0]["mask"], style=(eyes[0]["real"], eyes[0]["mask"])).image
    assert np.abs(other.astype(int) - stored.astype(int)).mean() > 1


def test_other_sizes_are_resized_and_said_so(checkpoint, files):
    p = Purifier.load(checkpoint)
    big_mask = Image.open(files["mask"]).resize((120, 72), Image.NEAREST)
    r = p.purify(files["big"], big_mask)
    assert r.image.size == (120, 72) and r.mask.size == (120, 72)
    assert any("120x72 resized to 60x36" in n for n in r.notes)
    none = Purifier.load(checkpoint, resize="none")
    assert none.purify(files["big"], big_mask).image.size == (120, 72)
    with pytest.raises(PurifierError, match="multiples of 4"):
        none.purify(np.zeros((37, 61, 3), np.uint8), np.zeros((37, 61), np.uint8))


@pytest.mark.parametrize("image, mask, message", [
    ("missing.png", None, "image: image not found"),
    (np.zeros((36, 60, 3), np.float32), np.zeros((36, 60)), "numpy images must be uint8"),
    (np.zeros((36, 60, 3), np.uint8), None, "mask is missing.*attention mask"),
    (np.zeros((36, 60, 3), np.uint8), np.zeros((20, 30), np.uint8), "mask is 30x20 but its image is 60x36"),
    (np.zeros((36, 60, 3), np.uint8), np.full((36, 60), 2.0), r"mask values must lie in \[0, 1\]"),
    (torch.zeros(2, 3, 36, 60), torch.zeros(36, 60), "got a batch of 2; use purify_batch"),
    (torch.full((3, 36, 60), 3.0), torch.zeros(36, 60), r"must lie in \[-1, 1\]"),
    (12345, None, "unsupported type int"),
])
def test_bad_input_is_named(checkpoint, image, mask, message):
    p = Purifier.load(checkpoint)
    with pytest.raises(PurifierError, match=message):
        p.purify(image, mask)


def test_global_model_needs_no_mask(tmp_path, eyes):
    torch.manual_seed(0)
    save_mgst_checkpoint(MGSTGenerator(MGSTConfig.small(mask_mode="global")), tmp_path / "g")
    p = Purifier.load(tmp_path / "g")
    assert not p.uses_regions
    a = p.purify(eyes[0]["real"])
    b = p.purify(eyes[0]["real"], eyes[0]["mask"])
    np.testing.assert_array_equal(a.image, b.image)
    assert any("global baseline" in n for n in b.notes)
    assert any("never calibrated" in n for n in a.notes)


def test_embedded_model_is_trained_and_purifies(eyes):
    assert (DEFAULT_MODEL / "config.json").is_file(), "lmt_fast/assets/mgst must ship the trained MGST model"
    p = Purifier.from_pretrained()
    assert p.uses_regions and int(p.generator.style_images) > 0
    r = p.purify(DEFAULT_MODEL / "sample_real.png", DEFAULT_MODEL / "sample_mask.png")
    assert r.image.size == Image.open(DEFAULT_MODEL / "sample_real.png").size and not r.notes


# -- the command line ------------------------------------------------------------------------------

def test_cli_purify_end_to_end(run_cli, checkpoint, files, tmp_path):
    out = tmp_path / "out" / "purified.png"
    result = run_cli("purify", files["image"], "--mask", files["mask"], "-o", out, "--checkpoint", checkpoint)
    assert result.code == 0, result.err
    assert "stored synthetic style" in result.out
    assert Image.open(out).size == (60, 36)
    styled = tmp_path / "styled.png"
    result = run_cli("purify", files["image"], "--mask", files["mask"], "-o", styled, "--checkpoint", checkpoint,
                     "--style-image", files["style"], "--style-mask", files["style_mask"], "--backend", "eager")
    assert result.code == 0, result.err
    assert "style image" in result.out and styled.is_file()


def test_cli_embedded_model(run_cli, tmp_path):
    out = tmp_path / "demo.png"
    result = run_cli("purify", DEFAULT_MODEL / "sample_real.png", "--mask", DEFAULT_MODEL / "sample_mask.png",
                     "-o", out)
    assert result.code == 0, result.err
    assert out.is_file()


@pytest.mark.parametrize("extra, message", [
    (["--mask", "{small_mask}"], "mask is 30x20 but its image is 60x36"),
    (["--mask", "{mask}", "--style-image", "{style}"], "--style-image and --style-mask go together"),
    (["--mask", "{mask}", "--checkpoint", "{nowhere}"], "checkpoint not found"),
    (["--mask", "{mask}", "--backend", "nope"], "backend 'nope' is not usable"),
    ([], "mask is missing"),
])
def test_cli_user_errors_exit_2_with_one_line(run_cli, checkpoint, files, tmp_path, extra, message):
    small = tmp_path / "small_mask.png"
    Image.new("L", (30, 20)).save(small)
    names = {"small_mask": small, "mask": files["mask"], "style": files["style"], "nowhere": tmp_path / "nowhere"}
    argv = [a.format(**names) for a in extra]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    result = run_cli("purify", files["image"], "-o", tmp_path / "o.png", *argv)
    assert result.code == 2
    assert len(result.err_lines) == 1 and result.err_lines[0].startswith("lmt-fast: error:")
    assert message in result.err_lines[0]
    assert not (tmp_path / "o.png").exists()
