"""`lmt-fast demo` writes one grid of the bundled samples (and of given images)."""
from PIL import Image


def test_demo_grid_from_bundled_samples(run_cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "demo.png"
    r = run_cli("demo", "-o", out, "--checkpoint", tiny_checkpoint)
    assert r.code == 0, r.err
    with Image.open(out) as grid:
        # 1 header row + 2 rows per input (3 inputs); 1 input column + 3 exemplars; 128px tiles, 4px gaps
        assert grid.size == (4 * 128 + 5 * 4, 7 * 128 + 8 * 4)
        assert grid.mode == "RGB"


def test_demo_with_given_images_and_a_bad_one(run_cli, tiny_checkpoint, image_files, tmp_path):
    out = tmp_path / "demo.png"
    r = run_cli("demo", "-o", out, "--checkpoint", tiny_checkpoint, "--inputs", image_files.rgb_png,
                "--exemplars", image_files.rgb64_png, image_files.gray_png)
    assert r.code == 0, r.err
    with Image.open(out) as grid:
        assert grid.size == (3 * 128 + 4 * 4, 3 * 128 + 4 * 4)
    r = run_cli("demo", "-o", out, "--checkpoint", tiny_checkpoint, "--inputs", tmp_path / "missing.png")
    assert r.code == 2 and "missing.png" in r.err and "Traceback" not in r.err
