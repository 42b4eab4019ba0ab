"""The `lmt-fast` command line: translate, info, init-checkpoint, and one-line user errors (exit code 2)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmt_fast.io import load_checkpoint
from lmt_fast.translator import DEFAULT_MODEL

NO_DEFAULT_MODEL = not (DEFAULT_MODEL / "config.json").is_file()


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err
    lines = result.err_lines
    assert len(lines) == 1, result.err
    assert lines[0].startswith("lmt-fast: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _mask_png(path: Path, size: tuple[int, int], value: int = 255) -> Path:
    """A grayscale mask PNG of size (width, height) filled with value."""
    Image.new("L", size, value).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# translate
# --------------------------------------------------------------------------------------------------

def test_translate_writes_an_image_of_the_input_size(run_cli, tiny_checkpoint, image_files, tmp_path):
    out = tmp_path / "out.png"
    r = run_cli("translate", image_files.rgb_png, image_files.gray_png, "-o", out, "--checkpoint", tiny_checkpoint)
    assert r.code == 0, r.err
    with Image.open(out) as img:
        assert img.size == (300, 200) and img.mode == "RGB"
    assert f"wrote {out} (300x200)" in r.out
    # notes go to stderr, never as errors
    assert "Traceback" not in r.err and "error" not in r.err
    assert "300x200 resized to 64x64" in r.err and "grayscale" in r.err


def test_translate_matches_the_api(run_cli, tiny_checkpoint, image_files, tmp_path):
    from lmt_fast import Translator

    out = tmp_path / "sub" / "dir" / "out.png"  # parent folders are created
    r = run_cli("translate", image_files.rgb_png, image_files.rgba_png, "-o", out, "--checkpoint", tiny_checkpoint)
    assert r.code == 0, r.err
    expected = Translator.load(tiny_checkpoint).translate(image_files.rgb_png, image_files.rgba_png).image
    with Image.open(out) as img:
        assert np.array_equal(np.asarray(img), np.asarray(expected))


def test_translate_to_jpeg(run_cli, tiny_checkpoint, image_files, tmp_path):
    out = tmp_path / "out.jpg"
    r = run_cli("translate", image_files.rgb_jpg, image_files.rgb64_png, "-o", out, "--checkpoint", tiny_checkpoint)
    assert r.code == 0, r.err
    with Image.open(out) as img:
        assert img.format == "JPEG" and img.size == (300, 200) and img.mode == "RGB"


def test_translate_with_masks_and_save_masks(run_cli, tiny_checkpoint, image_files, tmp_path):
    input_mask = _mask_png(tmp_path / "in_mask.png", (300, 200), 0)
    exemplar_mask = _mask_png(tmp_path / "ex_mask.png", (90, 90), 255)
    masks = tmp_path / "masks"
    out = tmp_path / "out.png"
    r = run_cli("translate", image_files.rgb_png, image_files.gray_png, "-o", out, "--checkpoint", tiny_checkpoint,
                "--input-mask", input_mask, "--exemplar-mask", exemplar_mask, "--save-masks", masks)
    assert r.code == 0, r.err
    with Image.open(masks / "input_mask.png") as m:
        assert m.mode == "L" and m.size == (300, 200)
        assert np.asarray(m).max() == 0  # the given (all-zero) mask, not a learned one
    with Image.open(masks / "exemplar_mask.png") as m:
        assert m.mode == "L" and m.size == (90, 90)
        assert np.asarray(m).min() == 255
    with Image.open(out) as img:
        assert img.size == (300, 200)


def test_translate_save_masks_learned(run_cli, tiny_checkpoint, image_files, tmp_path):
    masks = tmp_path / "masks"
    r = run_cli("translate", image_files.rgb_png, image_files.gray_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint, "--save-masks", masks)
    assert r.code == 0, r.err
    with Image.open(masks / "input_mask.png") as m:
        assert m.size == (300, 200) and np.asarray(m).std() > 0  # a learned, non-constant mask
    with Image.open(masks / "exemplar_mask.png") as m:
        assert m.size == (90, 90)


def test_translate_bfloat16_and_single_file_checkpoint(run_cli, tiny_checkpoint, image_files, tmp_path):
    single = tmp_path / "tiny.safetensors"
    assert run_cli("init-checkpoint", single).code == 0
    out = tmp_path / "out.png"
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", out, "--checkpoint", single,
                "--dtype", "bfloat16", "--device", "cpu")
    assert r.code == 0, r.err
    ref = tmp_path / "ref.png"
    assert run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", ref,
                   "--checkpoint", tiny_checkpoint).code == 0
    with Image.open(out) as a, Image.open(ref) as b:
        assert a.size == (64, 64)
        diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean()
        assert diff < 0.05 * 127.5


def test_translate_resize_none(run_cli, tiny_checkpoint, tmp_path):
    a = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(a)
    out = tmp_path / "out.png"
    r = run_cli("translate", a, a, "-o", out, "--checkpoint", tiny_checkpoint, "--resize", "none")
    assert r.code == 0, r.err
    assert r.err_lines == []  # nothing resized, nothing to say
    with Image.open(out) as img:
        assert img.size == (80, 48)


# --------------------------------------------------------------------------------------------------
# info and init-checkpoint
# --------------------------------------------------------------------------------------------------

def test_info_text(run_cli):
    r = run_cli("info")
    assert r.code == 0
    assert "versions:" in r.out and torch.__version__ in r.out
    assert "op backends:" in r.out and "reference" in r.out
    assert "default model:" in r.out


def test_info_json(run_cli):
    r = run_cli("info", "--json")
    assert r.code == 0
    info = json.loads(r.out)
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["lmt_fast"]
    assert "reference" in info["op_backends"]["registered"]
    assert info["op_backends"]["auto_on_cpu"] in info["op_backends"]["registered"]
    assert info["devices"]["cuda_available"] == torch.cuda.is_available()
    assert (info["default_model"] is None) == NO_DEFAULT_MODEL


@pytest.mark.parametrize("name", ["ckpt_dir", "ckpt.safetensors"])
def test_init_checkpoint(run_cli, tmp_path, tiny_checkpoint, name):
    path = tmp_path / name
    r = run_cli("init-checkpoint", path)
    assert r.code == 0, r.err
    assert "wrote untrained tiny checkpoint" in r.out
    ck = load_checkpoint(path)
    assert ck.config.image_size == 64 and ck.metadata["extra"]["note"] == "untrained, seed 0"
    # seed 0 gives the same weights as the shared fixture (torch.manual_seed(0) + tiny config)
    ref = load_checkpoint(tiny_checkpoint).generator.state_dict()
    for k, v in ck.generator.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_init_checkpoint_seed_and_compat(run_cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("init-checkpoint", a, "--seed", "1").code == 0
    assert run_cli("init-checkpoint", b, "--seed", "2", "--compat", "official").code == 0
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.config.compat == "paper" and cb.config.compat == "official"
    key = "content_encoder.stem.conv.weight"
    assert not torch.equal(ca.generator.state_dict()[key], cb.generator.state_dict()[key])


def test_no_command_prints_help(run_cli):
    r = run_cli()
    assert r.code == 2
    assert "usage: lmt-fast" in r.out


# --------------------------------------------------------------------------------------------------
# user errors: exit code 2, one line on stderr, no traceback
# --------------------------------------------------------------------------------------------------

def test_error_missing_input(run_cli, tiny_checkpoint, image_files, tmp_path):
    out = tmp_path / "out.png"
    r = run_cli("translate", tmp_path / "missing.png", image_files.rgb64_png, "-o", out, "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "image not found", "missing.png")
    assert not out.exists()


def test_error_missing_exemplar(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, tmp_path / "gone.jpg", "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "image not found", "gone.jpg")


def test_error_corrupt_image(run_cli, tiny_checkpoint, image_files, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image\n")
    r = run_cli("translate", fake, image_files.rgb64_png, "-o", tmp_path / "o.png", "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "fake.png", "not an image file")


def test_error_truncated_image(run_cli, tiny_checkpoint, image_files, tmp_path):
    data = image_files.rgb_png.read_bytes()
    image_files.rgb_png.write_bytes(data[: len(data) // 2])
    r = run_cli("translate", image_files.rgb_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "rgb.png could not be decoded")


def test_error_empty_image(run_cli, tiny_checkpoint, image_files, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    r = run_cli("translate", image_files.rgb64_png, empty, "-o", tmp_path / "o.png", "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "empty.png is an empty file")


def test_error_missing_checkpoint(run_cli, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", tmp_path / "no_such_ckpt")
    assert_one_line_error(r, "checkpoint not found", "no_such_ckpt")


def test_error_not_a_checkpoint_dir(run_cli, image_files, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", folder)
    assert_one_line_error(r, "not an lmt_fast checkpoint", "config.json is missing")


def test_error_corrupt_checkpoint(run_cli, image_files, tmp_path):
    path = tmp_path / "c.safetensors"
    assert run_cli("init-checkpoint", path).code == 0
    path.write_bytes(path.read_bytes()[:-100])
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", path)
    assert_one_line_error(r, "c.safetensors is not a readable safetensors file")


def test_error_checkpoint_with_bad_json(run_cli, tiny_checkpoint, image_files, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "config.json").write_text("{{{")
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", ckpt)
    assert_one_line_error(r, "config.json is not valid JSON")


def test_error_pth_checkpoint(run_cli, image_files, tmp_path):
    pth = tmp_path / "model.pth"
    torch.save({"w": torch.zeros(2)}, pth)
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", pth)
    assert_one_line_error(r, "pickled PyTorch files are not loaded")


def test_error_mask_of_the_wrong_size(run_cli, tiny_checkpoint, image_files, tmp_path):
    mask = _mask_png(tmp_path / "m.png", (64, 64))
    out = tmp_path / "o.png"
    r = run_cli("translate", image_files.rgb_png, image_files.rgb64_png, "-o", out, "--checkpoint", tiny_checkpoint,
                "--input-mask", mask)
    assert_one_line_error(r, "input_mask is 64x64 but its image is 300x200")
    assert not out.exists()


def test_error_missing_mask(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint, "--exemplar-mask", tmp_path / "nomask.png")
    assert_one_line_error(r, "exemplar_mask", "mask not found")


def test_error_output_is_a_directory(run_cli, tiny_checkpoint, image_files, tmp_path):
    folder = tmp_path / "outdir"
    folder.mkdir()
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", folder, "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "is a directory")
    assert list(folder.iterdir()) == []


def test_error_unknown_output_format_is_one_line(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb_png, image_files.gray_png, "-o", tmp_path / "out.unknownext",
                "--checkpoint", tiny_checkpoint)
    assert_one_line_error(r, "cannot tell the image format")


def test_error_output_parent_is_a_file(run_cli, tiny_checkpoint, image_files, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    try:
        r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", blocker / "out.png",
                    "--checkpoint", tiny_checkpoint)
    except OSError as exc:  # escaped main(): in the console script that is a traceback and exit code 1
        pytest.fail(f"main() raised {exc!r}")
    assert_one_line_error(r, "afile")


def test_error_save_masks_is_a_file(run_cli, tiny_checkpoint, image_files, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = tmp_path / "o.png"
    try:
        r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", out,
                    "--checkpoint", tiny_checkpoint, "--save-masks", blocker)
    except OSError as exc:
        pytest.fail(f"main() raised {exc!r}")
    assert_one_line_error(r, "afile")


@pytest.mark.skipif(not NO_DEFAULT_MODEL, reason="a default model is shipped, so no --checkpoint is fine")
def test_error_no_default_model(run_cli, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png")
    assert_one_line_error(r, "no embedded default model", "Translator.load")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so --device cuda is no error")
def test_error_cuda_unavailable(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint, "--device", "cuda")
    assert_one_line_error(r, "CUDA is not available")


def test_error_unknown_backend(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb64_png, image_files.rgb64_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint, "--backend", "warp-drive")
    assert_one_line_error(r, "backend 'warp-drive' is not usable")


def test_error_resize_none_with_bad_size(run_cli, tiny_checkpoint, image_files, tmp_path):
    r = run_cli("translate", image_files.rgb_png, image_files.rgb_png, "-o", tmp_path / "o.png",
                "--checkpoint", tiny_checkpoint, "--resize", "none")
    # 300 is not a multiple of 16
    assert_one_line_error(r, "300x200", "multiples of 16")


# --------------------------------------------------------------------------------------------------
# the installed console script (one real subprocess)
# --------------------------------------------------------------------------------------------------

def test_console_script_entry_point(tiny_checkpoint, image_files, tmp_path):
    script = Path(sys.executable).parent / "lmt-fast"
    found = str(script) if script.exists() else shutil.which("lmt-fast")
    assert found, "the lmt-fast console script is not installed"
    out = tmp_path / "cli_out.png"
    proc = subprocess.run([found, "translate", str(image_files.rgb_png), str(image_files.gray_png), "-o", str(out),
                           "--checkpoint", str(tiny_checkpoint)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with Image.open(out) as img:
        assert img.size == (300, 200) and img.mode == "RGB"
