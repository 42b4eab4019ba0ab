"""Shared fixtures: a tiny checkpoint, real image files on disk, and an in-process CLI runner.

Everything here uses LOMITConfig.tiny() and small images so that the suites run in seconds on a CPU.
"""
from __future__ import annotations

import os

# Triton kernels run on CPU tensors in Triton's interpreter; the switch must be set before triton is
# imported, so it is set here, before any test module imports lmt_fast. GPU machines run them natively.
if os.environ.get("LMT_FAST_TEST_GPU", "0") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint directory of an untrained tiny LOMIT generator, written after torch.manual_seed(0).

    Session-scoped: tests must not modify it (copy it first).
    """
    from lmt_fast.io import save_checkpoint
    from lmt_fast.models import LOMITConfig, LOMITGenerator

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "ckpt"
    save_checkpoint(LOMITGenerator(LOMITConfig.tiny()), path)
    return path


def styled_generator(seed: int = 0, style_gain: float = 3.0):
    """A tiny generator whose output depends clearly on the exemplar.

    In an untrained tiny model the style codes barely depend on the image (the unnormalised strided
    convs shrink the signal), so an exemplar moves the output by ~1e-5 only. Scaling the style encoder's
    weights makes the exemplar's influence ~1e-2, so "the exemplar changes / does not change the output"
    can be checked with wide margins.
    """
    from lmt_fast.models import LOMITConfig, LOMITGenerator

    torch.manual_seed(seed)
    generator = LOMITGenerator(LOMITConfig.tiny())
    with torch.no_grad():
        for name, p in generator.style_encoder.named_parameters():
            if name.endswith("weight"):
                p.mul_(style_gain)
    return generator


@pytest.fixture(scope="session")
def styled_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint directory of `styled_generator()` (session-scoped: do not modify)."""
    from lmt_fast.io import save_checkpoint

    path = tmp_path_factory.mktemp("styled_checkpoint") / "ckpt"
    save_checkpoint(styled_generator(), path)
    return path


@dataclass
class ImageFiles:
    rgb_png: Path      # RGB 300x200 (width x height)
    rgb_jpg: Path      # RGB 300x200 JPEG
    gray_png: Path     # "L" 90x90
    rgba_png: Path     # RGBA 64x64
    gray16_png: Path   # 16-bit grayscale 48x40 (opens as mode "I;16")
    rgb64_png: Path    # RGB 64x64: the tiny model's own size, so no resize happens
    arrays: dict       # the uint8 / uint16 arrays the files were written from, by attribute name


@pytest.fixture
def image_files(tmp_path) -> ImageFiles:
    """Real PNG and JPEG files written with Pillow from random data (fixed seed)."""
    from PIL import Image

    rng = np.random.default_rng(1234)
    arrays = {
        "rgb_png": rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
        "gray_png": rng.integers(0, 256, (90, 90), dtype=np.uint8),
        "rgba_png": rng.integers(0, 256, (64, 64, 4), dtype=np.uint8),
        "gray16_png": rng.integers(0, 65536, (40, 48), dtype=np.uint16),
        "rgb64_png": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    }
    arrays["rgb_jpg"] = arrays["rgb_png"]
    paths = {}
    paths["rgb_png"] = tmp_path / "rgb.png"
    Image.fromarray(arrays["rgb_png"], mode="RGB").save(paths["rgb_png"])
    paths["rgb_jpg"] = tmp_path / "rgb.jpg"
    Image.fromarray(arrays["rgb_jpg"], mode="RGB").save(paths["rgb_jpg"], quality=90)
    paths["gray_png"] = tmp_path / "gray.png"
    Image.fromarray(arrays["gray_png"], mode="L").save(paths["gray_png"])
    paths["rgba_png"] = tmp_path / "rgba.png"
    Image.fromarray(arrays["rgba_png"], mode="RGBA").save(paths["rgba_png"])
    paths["gray16_png"] = tmp_path / "gray16.png"
    Image.fromarray(arrays["gray16_png"]).save(paths["gray16_png"])
    paths["rgb64_png"] = tmp_path / "rgb64.png"
    Image.fromarray(arrays["rgb64_png"], mode="RGB").save(paths["rgb64_png"])
    with Image.open(paths["gray16_png"]) as img:  # guard the fixture itself: it must really be 16-bit
        assert img.mode in ("I;16", "I"), img.mode
    return ImageFiles(arrays=arrays, **paths)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def run_cli(capsys):
    """Run `lmt_fast.cli.main(argv)` in-process: run_cli("info", "--json") -> CliResult(code, out, err)."""
    from lmt_fast.cli import main

    def run(*argv) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
