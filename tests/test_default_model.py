"""The embedded default model loads without a network and really translates hair colour locally."""
import numpy as np
import pytest
from PIL import Image

from lmt_fast import Translator
from lmt_fast.translator import DEFAULT_MODEL

SAMPLES = DEFAULT_MODEL.parent / "samples"
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no default model shipped")


@pytest.fixture(scope="module")
def translator():
    return Translator.from_pretrained()


def _hair_colour(result, hair_mask):
    image = np.asarray(result.image, dtype=np.float32)
    return (image * hair_mask[..., None]).sum(axis=(0, 1)) / hair_mask.sum()


def test_exemplar_hair_colour_reaches_the_input_hair(translator):
    hair = np.asarray(Image.open(SAMPLES / "input_hair_mask.png"), dtype=np.float32) / 255  # black-haired input
    blond = _hair_colour(translator.translate(SAMPLES / "input.png", SAMPLES / "portrait_blond.png"), hair)
    brown = _hair_colour(translator.translate(SAMPLES / "input.png", SAMPLES / "portrait_brown.png"), hair)
    black = _hair_colour(translator.translate(SAMPLES / "input.png", SAMPLES / "portrait_black.png"), hair)
    assert blond.mean() > brown.mean() + 30 > black.mean() + 45
    assert blond[0] > blond[2] + 30  # blond is warm (red channel well above blue), not just brighter


def test_learned_mask_finds_the_hair(translator):
    hair = np.asarray(Image.open(SAMPLES / "input_hair_mask.png"), dtype=np.float32) / 255 > 0.5
    result = translator.translate(SAMPLES / "input.png", SAMPLES / "exemplar.png")
    learned = np.asarray(result.input_mask, dtype=np.float32) / 255 > 0.5
    iou = (learned & hair).sum() / (learned | hair).sum()
    assert iou > 0.4
    assert learned[hair].mean() > 3 * learned[~hair].mean()  # the mask is on the hair, not everywhere
