"""`lmt-fast demo`: one PNG grid of inputs x exemplars -> translations, with the learned input masks.

Layout: the top row shows the exemplars; each input then gets two rows: the input and its translation
with every exemplar, and beneath them the input's learned mask for that exemplar.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parent / "assets" / "samples"
DEFAULT_INPUTS = ("portrait_black.png", "portrait_red.png", "portrait_brown.png")
DEFAULT_EXEMPLARS = ("portrait_blond.png", "portrait_black.png", "portrait_brown.png")


def demo_grid(translator, inputs=None, exemplars=None, tile: int = 128, gap: int = 4):
    """The grid as a PIL image; inputs/exemplars default to the bundled sample portraits."""
    from PIL import Image

    inputs = [Path(p) for p in inputs] if inputs else [SAMPLES / name for name in DEFAULT_INPUTS]
    exemplars = [Path(p) for p in exemplars] if exemplars else [SAMPLES / name for name in DEFAULT_EXEMPLARS]

    def fit(img):
        return np.asarray(img.convert("RGB").resize((tile, tile), Image.BILINEAR))

    blank = np.full((tile, tile, 3), 255, np.uint8)
    rows = [[blank] + [fit(Image.open(e)) for e in exemplars]]
    for source in inputs:
        results = [translator.translate(source, e) for e in exemplars]
        rows.append([fit(Image.open(source))] + [fit(r.image) for r in results])
        rows.append([blank] + [fit(r.input_mask) for r in results])
    return Image.fromarray(_assemble(rows, tile, gap))


def _assemble(rows, tile: int, gap: int) -> np.ndarray:
    height = len(rows) * tile + (len(rows) + 1) * gap
    width = len(rows[0]) * tile + (len(rows[0]) + 1) * gap
    canvas = np.full((height, width, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            y, x = gap + i * (tile + gap), gap + j * (tile + gap)
            canvas[y:y + tile, x:x + tile] = cell
    return canvas
