"""lmt_fast.io: safetensors + JSON checkpoints (never pickle) and image / mask files."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lmt_fast import io as lio
from lmt_fast.io import (
    CONFIG_FILE,
    FORMAT_VERSION,
    METADATA_KEY,
    WEIGHTS_FILE,
    CheckpointError,
    ImageError,
    load_checkpoint,
    load_image,
    load_mask,
    read_header,
    save_checkpoint,
    save_image,
)
from lmt_fast.models import LOMITConfig, LOMITDiscriminator, LOMITGenerator


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _inputs(seed: int = 0, size: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    e = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    return x, e


def _run(generator: LOMITGenerator, x, e):
    generator.eval()
    with torch.no_grad():
        out = generator(x, e)
    return out.image, out.input_mask, out.exemplar_mask


def _tmp_leftovers(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def generator():
    torch.manual_seed(0)
    return LOMITGenerator(LOMITConfig.tiny()).eval()


@pytest.fixture
def ckpt_dir(tmp_path, generator) -> Path:
    """A fresh, modifiable checkpoint directory."""
    return save_checkpoint(generator, tmp_path / "ckpt")


@pytest.fixture
def ckpt_file(tmp_path, generator) -> Path:
    """A fresh, modifiable single-file checkpoint."""
    return save_checkpoint(generator, tmp_path / "model.safetensors")


def _rewrite_dir_weights(ckpt: Path, edit) -> None:
    tensors = load_file(str(ckpt / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(ckpt / WEIGHTS_FILE))


def _rewrite_file(ckpt: Path, edit_tensors=None, edit_header=None, raw_metadata=None) -> None:
    with safe_open(str(ckpt), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(ckpt))
    if edit_tensors:
        edit_tensors(tensors)
    if edit_header:
        header = json.loads(metadata[METADATA_KEY])
        edit_header(header)
        metadata = {METADATA_KEY: json.dumps(header)}
    if raw_metadata is not None:
        metadata = raw_metadata
    save_file(tensors, str(ckpt), metadata=metadata)


def _edit_dir_header(ckpt: Path, edit) -> None:
    header = json.loads((ckpt / CONFIG_FILE).read_text())
    edit(header)
    (ckpt / CONFIG_FILE).write_text(json.dumps(header))


# --------------------------------------------------------------------------------------------------
# checkpoints: round trips
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["dir", "file"])
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, generator, layout):
    path = tmp_path / ("ckpt" if layout == "dir" else "ckpt.safetensors")
    written = save_checkpoint(generator, path, extra={"step": 123})
    assert written == path
    assert path.is_dir() if layout == "dir" else path.is_file()

    ck = load_checkpoint(path)
    assert ck.config == generator.config
    assert ck.config.attributes == generator.config.attributes
    assert ck.metadata["format_version"] == FORMAT_VERSION
    assert ck.metadata["extra"] == {"step": 123}
    assert ck.discriminator is None
    assert not ck.generator.training  # comes back in eval mode

    state_a, state_b = generator.state_dict(), ck.generator.state_dict()
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.equal(state_a[k], state_b[k]), k

    x, e = _inputs()
    for a, b in zip(_run(generator, x, e), _run(ck.generator, x, e)):
        assert torch.equal(a, b)


def test_checkpoint_dir_layout_and_header(ckpt_dir):
    assert sorted(p.name for p in ckpt_dir.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    header = json.loads((ckpt_dir / CONFIG_FILE).read_text())
    assert header["format"] == "lmt_fast.checkpoint"
    assert header["format_version"] == FORMAT_VERSION
    assert header["config"] == LOMITConfig.tiny().to_dict()
    assert header["has_discriminator"] is False
    # The weights are plain safetensors with "generator." prefixes.
    keys = load_file(str(ckpt_dir / WEIGHTS_FILE)).keys()
    assert keys and all(k.startswith("generator.") for k in keys)


def test_checkpoint_file_carries_header_in_metadata(ckpt_file):
    header, weights = read_header(ckpt_file)
    assert weights == ckpt_file
    assert header["format_version"] == FORMAT_VERSION
    assert LOMITConfig.from_dict(header["config"]) == LOMITConfig.tiny()


def test_checkpoint_non_default_config_round_trip(tmp_path):
    torch.manual_seed(1)
    cfg = LOMITConfig.tiny(base_dim=4, compat="official", attributes=("A", "B"), mlp_blocks=0)
    g = LOMITGenerator(cfg).eval()
    ck = load_checkpoint(save_checkpoint(g, tmp_path / "c.safetensors"))
    assert ck.config == cfg
    x, e = _inputs(3)
    for a, b in zip(_run(g, x, e), _run(ck.generator, x, e)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_discriminator_optional_round_trip(tmp_path, generator, layout):
    torch.manual_seed(5)
    disc = LOMITDiscriminator(generator.config).eval()
    path = tmp_path / ("ckpt" if layout == "dir" else "ckpt.safetensors")
    save_checkpoint(generator, path, discriminator=disc)
    header, _ = read_header(path)
    assert header["has_discriminator"] is True

    without = load_checkpoint(path)
    assert without.discriminator is None

    ck = load_checkpoint(path, discriminator=True)
    assert isinstance(ck.discriminator, LOMITDiscriminator)
    x, _ = _inputs(1)
    with torch.no_grad():
        src_a, cls_a = disc(x)
        ck.discriminator.eval()
        src_b, cls_b = ck.discriminator(x)
    assert torch.equal(src_a, src_b) and torch.equal(cls_a, cls_b)


def test_discriminator_requested_but_absent(ckpt_dir):
    with pytest.raises(CheckpointError, match="no discriminator"):
        load_checkpoint(ckpt_dir, discriminator=True)


def test_config_overrides(ckpt_dir):
    ck = load_checkpoint(ckpt_dir, config_overrides={"image_size": 96})
    assert ck.config.image_size == 96
    with pytest.raises(CheckpointError, match="invalid model config.*compat"):
        load_checkpoint(ckpt_dir, config_overrides={"compat": "nonsense"})
    with pytest.raises(CheckpointError, match="invalid model config.*no_such_field"):
        load_checkpoint(ckpt_dir, config_overrides={"no_such_field": 1})


def test_compat_override_paper_on_official_checkpoint(tmp_path):
    torch.manual_seed(0)
    official = LOMITGenerator(LOMITConfig.tiny(compat="official")).eval()
    path = save_checkpoint(official, tmp_path / "official")
    ck = load_checkpoint(path, config_overrides={"compat": "paper"})
    assert ck.config.compat == "paper"
    # Every weight the paper model has is the checkpoint's.
    saved = official.state_dict()
    for k, v in ck.generator.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_save_overwrites_existing_checkpoint(tmp_path, generator):
    path = tmp_path / "ckpt"
    save_checkpoint(generator, path)
    torch.manual_seed(42)
    other = LOMITGenerator(LOMITConfig.tiny()).eval()
    save_checkpoint(other, path)
    ck = load_checkpoint(path)
    x, e = _inputs()
    assert torch.equal(_run(other, x, e)[0], _run(ck.generator, x, e)[0])
    assert not torch.equal(_run(generator, x, e)[0], _run(ck.generator, x, e)[0])


# --------------------------------------------------------------------------------------------------
# checkpoints: temporary files
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ckpt", "ckpt.safetensors"])
def test_successful_save_leaves_no_temporary_file(tmp_path, generator, name):
    save_checkpoint(generator, tmp_path / name)
    assert _tmp_leftovers(tmp_path) == []


def _failing_save_file(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"partial write")
    raise OSError("No space left on device (simulated)")


@pytest.mark.parametrize("name", ["ckpt", "ckpt.safetensors"])
def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, generator, monkeypatch, name):
    path = tmp_path / name
    save_checkpoint(generator, path)
    monkeypatch.setattr("safetensors.torch.save_file", _failing_save_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(LOMITGenerator(LOMITConfig.tiny()), path)
    monkeypatch.undo()
    ck = load_checkpoint(path)  # the final name still holds the complete, old checkpoint
    x, e = _inputs()
    assert torch.equal(_run(generator, x, e)[0], _run(ck.generator, x, e)[0])



@pytest.mark.parametrize("name", ["ckpt", "ckpt.safetensors"])
def test_interrupted_save_leaves_no_temporary_file(tmp_path, generator, monkeypatch, name):
    monkeypatch.setattr("safetensors.torch.save_file", _failing_save_file)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(generator, tmp_path / name)
    assert _tmp_leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# checkpoints: what is wrong is named
# --------------------------------------------------------------------------------------------------

FIRST_KEY = "generator.content_encoder.stem.conv.weight"


def _first_generator_key(ckpt_file_or_dir: Path) -> str:
    weights = ckpt_file_or_dir / WEIGHTS_FILE if ckpt_file_or_dir.is_dir() else ckpt_file_or_dir
    return sorted(k for k in load_file(str(weights)) if k.startswith("generator."))[0]


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_missing_key_is_named(layout, ckpt_dir, ckpt_file):
    path = ckpt_dir if layout == "dir" else ckpt_file
    key = _first_generator_key(path)
    drop = lambda t: t.pop(key)  # noqa: E731
    _rewrite_dir_weights(path, drop) if layout == "dir" else _rewrite_file(path, edit_tensors=drop)
    short = key[len("generator."):]
    with pytest.raises(CheckpointError, match=rf"missing 1 key\(s\): {short}"):
        load_checkpoint(path)


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_extra_key_is_named(layout, ckpt_dir, ckpt_file):
    path = ckpt_dir if layout == "dir" else ckpt_file

    def add(t):
        t["generator.bogus_layer.weight"] = torch.zeros(3)

    _rewrite_dir_weights(path, add) if layout == "dir" else _rewrite_file(path, edit_tensors=add)
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): bogus_layer\.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_wrong_shape_is_named(layout, ckpt_dir, ckpt_file):
    path = ckpt_dir if layout == "dir" else ckpt_file
    key = "generator.decoder.mlp_fg.out.bias"

    def reshape(t):
        t[key] = torch.zeros(t[key].numel() + 1)

    _rewrite_dir_weights(path, reshape) if layout == "dir" else _rewrite_file(path, edit_tensors=reshape)
    n = 2 * LOMITConfig.tiny().content_dim
    with pytest.raises(CheckpointError, match=rf"{key} has shape \({n + 1},\), the config expects \({n},\)"):
        load_checkpoint(path)


def test_extra_key_outside_the_known_prefixes_is_named(ckpt_dir):
    _rewrite_dir_weights(ckpt_dir, lambda t: t.update({"decoder.out.conv.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"decoder\.out\.conv\.weight"):
        load_checkpoint(ckpt_dir)


def test_every_mismatch_is_named_in_one_error(ckpt_dir):
    def edit(t):
        t.pop("generator.decoder.out.conv.bias")
        t["generator.decoder.mlp_bg.out.bias"] = torch.zeros(1)
        t["generator.extra.thing"] = torch.zeros(1)

    _rewrite_dir_weights(ckpt_dir, edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt_dir)
    msg = str(info.value)
    assert "decoder.out.conv.bias" in msg and "missing 1 key" in msg
    assert "extra.thing" in msg and "unexpected 1 key" in msg
    assert "generator.decoder.mlp_bg.out.bias has shape (1,)" in msg


def test_config_that_does_not_fit_the_weights(ckpt_dir):
    _edit_dir_header(ckpt_dir, lambda h: h["config"].update(base_dim=16))
    with pytest.raises(CheckpointError, match="does not fit its config.*has shape"):
        load_checkpoint(ckpt_dir)


def test_discriminator_key_problems_are_named(tmp_path, generator):
    disc = LOMITDiscriminator(generator.config)
    path = save_checkpoint(generator, tmp_path / "c.safetensors", discriminator=disc)
    _rewrite_file(path, edit_tensors=lambda t: t.pop("discriminator.cls.weight"))
    load_checkpoint(path)  # the generator alone is still fine
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): cls\.weight"):
        load_checkpoint(path, discriminator=True)


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_newer_format_version_is_refused(layout, ckpt_dir, ckpt_file):
    path = ckpt_dir if layout == "dir" else ckpt_file
    bump = lambda h: h.update(format_version=FORMAT_VERSION + 1)  # noqa: E731
    _edit_dir_header(path, bump) if layout == "dir" else _rewrite_file(path, edit_header=bump)
    with pytest.raises(CheckpointError, match=rf"format version {FORMAT_VERSION + 1}, newer than .*upgrade"):
        load_checkpoint(path)


def test_missing_format_version(ckpt_dir):
    _edit_dir_header(ckpt_dir, lambda h: h.pop("format_version"))
    with pytest.raises(CheckpointError, match="format_version is missing"):
        load_checkpoint(ckpt_dir)


def test_wrong_format_name(ckpt_dir):
    _edit_dir_header(ckpt_dir, lambda h: h.update(format="something.else"))
    with pytest.raises(CheckpointError, match="not an lmt_fast checkpoint"):
        load_checkpoint(ckpt_dir)


def test_unknown_model_kind(ckpt_file):
    _rewrite_file(ckpt_file, edit_header=lambda h: h.update(model="mgst-v9"))
    with pytest.raises(CheckpointError, match="unknown model kind 'mgst-v9'"):
        load_checkpoint(ckpt_file)


def test_mgst_checkpoint_points_to_the_purifier():
    from lmt_fast.translator import DEFAULT_MODEL

    with pytest.raises(CheckpointError, match="MGST purifier.*Purifier.load"):
        load_checkpoint(DEFAULT_MODEL.parent / "mgst")


def test_unknown_config_field(ckpt_dir):
    _edit_dir_header(ckpt_dir, lambda h: h["config"].update(warp_factor=9))
    with pytest.raises(CheckpointError, match="invalid model config.*warp_factor"):
        load_checkpoint(ckpt_dir)


def test_not_a_checkpoint_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not an lmt_fast checkpoint: config.json is missing"):
        load_checkpoint(folder)


def test_dir_without_weights(ckpt_dir):
    (ckpt_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load_checkpoint(ckpt_dir)


def test_missing_checkpoint_path(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")


def test_invalid_json_config(ckpt_dir):
    (ckpt_dir / CONFIG_FILE).write_text('{"format": "lmt_fast.checkpoint", ')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_checkpoint(ckpt_dir)


def test_invalid_json_metadata_in_file(ckpt_file):
    _rewrite_file(ckpt_file, raw_metadata={METADATA_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="metadata is not valid JSON"):
        load_checkpoint(ckpt_file)


def test_safetensors_file_without_lmt_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"generator.x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="without lmt_fast metadata"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 30])
def test_truncated_safetensors_file(ckpt_file, keep):
    data = ckpt_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    ckpt_file.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_checkpoint(ckpt_file)


def test_truncated_weights_in_dir(ckpt_dir):
    weights = ckpt_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-16])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(ckpt_dir)


class _Trap:
    """Unpickling this writes a sentinel file: proof that something was unpickled."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.write_text, (self.sentinel, "unpickled!"))


@pytest.mark.parametrize("where", ["model.pth", "model.pt", "model.ckpt", "model.bin",
                                   "model.safetensors", "dir"])
def test_pickled_files_are_never_unpickled(tmp_path, generator, monkeypatch, where):
    sentinel = tmp_path / "SENTINEL"
    payload = {"state_dict": generator.state_dict(), "trap": _Trap(sentinel)}

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    if where == "dir":
        path = tmp_path / "ckpt"
        path.mkdir()
        torch.save(payload, path / WEIGHTS_FILE)  # a torch pickle under the safetensors name
        (path / CONFIG_FILE).write_text(json.dumps({
            "format": "lmt_fast.checkpoint", "format_version": 1, "model": "lomit",
            "config": LOMITConfig.tiny().to_dict()}))
    else:
        path = tmp_path / where
        torch.save(payload, path)
    # Sanity check of the trap itself: unpickling really does write the sentinel.
    pickle.loads(pickle.dumps(_Trap(tmp_path / "CHECK")))
    assert (tmp_path / "CHECK").exists()

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    match = "pickled PyTorch files are not loaded" if where.endswith((".pth", ".pt", ".ckpt", ".bin")) \
        else "not a readable safetensors file"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)
    assert issubclass(ImageError, ValueError)


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------

def test_load_rgb_png_is_exact(image_files):
    img, notes = load_image(image_files.rgb_png)
    assert img.mode == "RGB" and img.size == (300, 200)
    assert np.array_equal(np.asarray(img), image_files.arrays["rgb_png"])
    assert notes == []


def test_load_jpeg(image_files):
    img, notes = load_image(str(image_files.rgb_jpg))
    assert img.mode == "RGB" and img.size == (300, 200)
    assert notes == []
    # lossy, but the same picture: random noise survives JPEG only roughly, so compare means
    diff = np.abs(np.asarray(img, dtype=np.float32) - image_files.arrays["rgb_jpg"]).mean()
    assert diff < 60


def test_load_grayscale_converts_and_says_so(image_files):
    img, notes = load_image(image_files.gray_png)
    assert img.mode == "RGB" and img.size == (90, 90)
    a = np.asarray(img)
    gray = image_files.arrays["gray_png"]
    for c in range(3):
        assert np.array_equal(a[:, :, c], gray)
    assert len(notes) == 1 and "grayscale" in notes[0] and "gray.png" in notes[0]


def test_load_rgba_composites_onto_white_and_says_so(image_files):
    img, notes = load_image(image_files.rgba_png)
    assert img.mode == "RGB" and img.size == (64, 64)
    rgba = image_files.arrays["rgba_png"].astype(np.float64)
    alpha = rgba[:, :, 3:] / 255.0
    expected = rgba[:, :, :3] * alpha + 255.0 * (1 - alpha)
    assert np.abs(np.asarray(img, dtype=np.float64) - expected).max() <= 1.0
    assert len(notes) == 1 and "RGBA" in notes[0] and "alpha" in notes[0]


def test_load_16bit_grayscale_scales_to_8bit(image_files):
    img, notes = load_image(image_files.gray16_png)
    assert img.mode == "RGB" and img.size == (48, 40)
    expected = image_files.arrays["gray16_png"].astype(np.float64) / 65535.0 * 255.0
    a = np.asarray(img, dtype=np.float64)
    assert np.abs(a[:, :, 0] - expected).max() <= 1.0
    assert np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2])
    assert len(notes) == 1 and "grayscale" in notes[0] and "I;16" in notes[0]


def _dark_16bit_png(tmp_path) -> Path:
    from PIL import Image

    # A dark 16-bit image: every value below 256 out of 65535, i.e. under 0.4% brightness.
    values = np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) % 256
    path = tmp_path / "dark16.png"
    Image.fromarray(values).save(path)
    return path


def test_dark_16bit_image_stays_dark(tmp_path):
    img, _ = load_image(_dark_16bit_png(tmp_path))
    assert np.asarray(img).max() <= 1  # 255 / 65535 * 255 = 0.99


def test_dark_16bit_mask_stays_dark(tmp_path):
    assert load_mask(_dark_16bit_png(tmp_path)).max() <= 1 / 255 + 1e-6


def test_missing_image(tmp_path):
    with pytest.raises(ImageError, match="image not found"):
        load_image(tmp_path / "nope.png")


def test_directory_as_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_empty_image_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="not an image file that Pillow can read"):
        load_image(path)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_png(image_files, fraction):
    data = image_files.rgb_png.read_bytes()
    image_files.rgb_png.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ImageError, match="could not be decoded.*truncated"):
        load_image(image_files.rgb_png)


def test_load_mask_values(tmp_path):
    from PIL import Image

    values = np.array([[0, 255], [128, 51]], dtype=np.uint8)
    Image.fromarray(values, mode="L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.dtype == np.float32 and m.shape == (2, 2)
    assert np.allclose(m, values / 255.0, atol=1e-7)
    # an RGB mask is converted to grayscale
    Image.fromarray(np.stack([values] * 3, axis=2), mode="RGB").save(tmp_path / "rgb_mask.png")
    assert np.allclose(load_mask(tmp_path / "rgb_mask.png"), values / 255.0, atol=1 / 255)


def test_load_mask_errors(tmp_path):
    with pytest.raises(ImageError, match="mask not found or empty"):
        load_mask(tmp_path / "none.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="mask not found or empty"):
        load_mask(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="could not be read"):
        load_mask(tmp_path / "text.png")


def test_save_image_round_trip_and_creates_parent(tmp_path, image_files):
    from PIL import Image

    img, _ = load_image(image_files.rgb_png)
    out = save_image(img, tmp_path / "new" / "deeper" / "out.png")
    assert out.is_file()
    with Image.open(out) as back:
        assert back.mode == "RGB"
        assert np.array_equal(np.asarray(back), image_files.arrays["rgb_png"])


def test_save_image_unknown_suffix(tmp_path, image_files):
    img, _ = load_image(image_files.rgb64_png)
    with pytest.raises(ImageError, match="cannot tell the image format"):
        save_image(img, tmp_path / "out.unknownext")
    assert not (tmp_path / "out.unknownext").exists()


def test_checkpoint_copy_helper_sanity(tiny_checkpoint, tmp_path):
    """The shared fixture is a valid checkpoint of the seed-0 tiny generator."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    ck = load_checkpoint(copy)
    torch.manual_seed(0)
    fresh = LOMITGenerator(LOMITConfig.tiny()).eval()
    x, e = _inputs()
    assert torch.equal(_run(fresh, x, e)[0], _run(ck.generator, x, e)[0])
    assert lio.FORMAT_VERSION == ck.metadata["format_version"]


def test_compat_override_official_on_paper_checkpoint_is_refused(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(LOMITGenerator(LOMITConfig.tiny()), tmp_path / "paper")
    with pytest.raises(CheckpointError, match="no running instance-norm statistics"):
        load_checkpoint(path, config_overrides={"compat": "official"})


def test_exif_orientation_is_applied_and_said(tmp_path):
    from PIL import Image

    from lmt_fast.io import load_image

    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = 255  # left half white
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif, quality=95)
    loaded, notes = load_image(path)
    assert loaded.size == (20, 40)  # upright: width and height swapped
    top = np.asarray(loaded)[:5].mean()
    bottom = np.asarray(loaded)[-5:].mean()
    assert top > 200 and bottom < 50  # the white half is now on top
    assert any("EXIF" in n for n in notes)
