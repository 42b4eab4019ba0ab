"""lmt_fast.Translator: input kinds, sizes, notes, masks (user intervention), batching, dtypes, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmt_fast import Translator
from lmt_fast.io import CheckpointError, ImageError
from lmt_fast.translator import DEFAULT_MODEL, ExemplarStyle, TranslationResult, TranslatorError


SIZE = 64  # LOMITConfig.tiny().image_size
MULT = 16  # LOMITConfig.tiny().size_multiple


@pytest.fixture(scope="module")
def tr(tiny_checkpoint) -> Translator:
    return Translator.load(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def styled(styled_checkpoint) -> Translator:
    """A translator whose output depends clearly on the exemplar (see conftest.styled_generator)."""
    return Translator.load(styled_checkpoint)


def rand_tensor(seed: int, *shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def rand_uint8(seed: int, *shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def max_diff(a, b) -> float:
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).float()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).float()
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------------
# the styled model really is exemplar-sensitive (guards the mask tests below against vacuity)
# --------------------------------------------------------------------------------------------------

def test_styled_model_output_depends_on_exemplar(styled):
    x = rand_tensor(0, 3, SIZE, SIZE)
    a = styled.translate(x, rand_tensor(1, 3, SIZE, SIZE)).image
    b = styled.translate(x, rand_tensor(2, 3, SIZE, SIZE) * 0.3).image
    assert max_diff(a, b) > 1e-3


# --------------------------------------------------------------------------------------------------
# input kinds and output kinds
# --------------------------------------------------------------------------------------------------

def test_path_input_gives_pil_at_input_size(tr, image_files):
    r = tr.translate(image_files.rgb_png, image_files.gray_png)
    assert isinstance(r, TranslationResult)
    assert isinstance(r.image, Image.Image) and r.image.mode == "RGB" and r.image.size == (300, 200)
    assert isinstance(r.input_mask, Image.Image) and r.input_mask.mode == "L" and r.input_mask.size == (300, 200)
    assert isinstance(r.exemplar_mask, Image.Image) and r.exemplar_mask.size == (90, 90)
    # resizing of both images and the grayscale conversion are all said
    text = "\n".join(r.notes)
    assert "300x200 resized to 64x64" in text and "resized back to 300x200" in text
    assert "90x90 resized to 64x64" in text
    assert "grayscale" in text
    assert len(r.notes) == 3


def test_str_and_pathlike_are_the_same(tr, image_files):
    a = tr.translate(str(image_files.rgb64_png), image_files.rgba_png).image
    b = tr.translate(image_files.rgb64_png, str(image_files.rgba_png)).image
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_no_notes_when_nothing_was_done(tr, image_files):
    r = tr.translate(image_files.rgb64_png, image_files.rgb64_png)
    assert r.notes == []
    assert r.image.size == (64, 64)


def test_rgba_input_is_converted_and_said(tr, image_files):
    r = tr.translate(image_files.rgba_png, image_files.rgb64_png)
    assert r.image.mode == "RGB" and r.image.size == (64, 64)
    assert len(r.notes) == 1 and "RGBA" in r.notes[0]


def test_16bit_exemplar_is_converted_and_said(tr, image_files):
    r = tr.translate(image_files.rgb64_png, image_files.gray16_png)
    assert r.exemplar_mask.size == (48, 40)
    text = "\n".join(r.notes)
    assert "grayscale (I;16)" in text and "48x40 resized to 64x64" in text


def test_pil_inputs_of_other_modes_are_converted_and_said(tr):
    gray = Image.fromarray(rand_uint8(3, 64, 64), mode="L")
    rgba = Image.fromarray(rand_uint8(4, 64, 64, 4), mode="RGBA")
    r = tr.translate(gray, rgba)
    assert r.image.mode == "RGB" and r.image.size == (64, 64)
    text = "\n".join(r.notes)
    assert "input: grayscale (L) image converted to RGB" in text
    assert "exemplar: RGBA image composited onto white" in text


def test_path_pil_numpy_give_the_same_pixels(tr, image_files):
    by_path = tr.translate(image_files.rgb_png, image_files.rgb64_png)
    with Image.open(image_files.rgb_png) as img:
        by_pil = tr.translate(img, Image.open(image_files.rgb64_png))
    by_numpy = tr.translate(image_files.arrays["rgb_png"], image_files.arrays["rgb64_png"])
    assert isinstance(by_numpy.image, np.ndarray)
    a, b, c = np.asarray(by_path.image), np.asarray(by_pil.image), by_numpy.image
    assert np.array_equal(a, b)
    assert np.array_equal(a, c)
    assert np.array_equal(np.asarray(by_path.input_mask), np.asarray(by_pil.input_mask))
    # the numpy mask is float in [0, 1]; the PIL one is the same mask in 0..255
    assert isinstance(by_numpy.input_mask, np.ndarray) and by_numpy.input_mask.shape == (200, 300)
    assert np.abs(by_numpy.input_mask * 255 - np.asarray(by_path.input_mask, dtype=np.float32)).max() <= 0.5 + 1e-3


def test_numpy_output_is_uint8_hwc_of_the_same_shape(tr):
    x = rand_uint8(5, 48, 80, 3)
    r = tr.translate(x, rand_uint8(6, 64, 64, 3))
    assert r.image.dtype == np.uint8 and r.image.shape == (48, 80, 3)
    assert r.input_mask.dtype == np.float32 and r.input_mask.shape == (48, 80)
    assert r.input_mask.min() >= 0 and r.input_mask.max() <= 1
    assert r.exemplar_mask.shape == (64, 64)
    assert any("80x48 resized to 64x64" in n for n in r.notes)


def test_numpy_grayscale_and_rgba_arrays(tr):
    r = tr.translate(rand_uint8(7, 64, 64), rand_uint8(8, 64, 64, 4))
    assert r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8
    text = "\n".join(r.notes)
    assert "grayscale array converted" in text and "RGBA array composited" in text


@pytest.mark.parametrize("shape", [(3, 48, 80), (1, 3, 48, 80), (3, 64, 64), (1, 3, 64, 64)])
def test_tensor_input_gives_same_shape_and_dtype(tr, shape):
    x = rand_tensor(9, *shape)
    e = rand_tensor(10, 3, 64, 64)
    r = tr.translate(x, e)
    assert isinstance(r.image, torch.Tensor)
    assert r.image.shape == x.shape and r.image.dtype == torch.float32
    assert r.image.min() >= -1 and r.image.max() <= 1
    assert torch.isfinite(r.image).all()
    assert tuple(r.input_mask.shape[-2:]) == shape[-2:]
    assert r.input_mask.dim() == len(shape)
    assert r.input_mask.min() >= 0 and r.input_mask.max() <= 1


def test_tensor_float64_keeps_its_dtype(tr):
    x = rand_tensor(11, 3, 64, 64).double()
    r = tr.translate(x, rand_tensor(12, 3, 64, 64))
    assert r.image.dtype == torch.float64 and r.image.shape == (3, 64, 64)


def test_tensor_and_numpy_agree(tr):
    a = rand_uint8(13, 64, 64, 3)
    e = rand_uint8(14, 64, 64, 3)
    to_t = lambda u: torch.from_numpy(u).permute(2, 0, 1).float() / 127.5 - 1  # noqa: E731
    by_numpy = tr.translate(a, e).image
    by_tensor = tr.translate(to_t(a), to_t(e)).image
    as_uint8 = ((by_tensor.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    assert np.abs(as_uint8.astype(int) - by_numpy.astype(int)).max() <= 1


def test_translation_is_deterministic(tiny_checkpoint, tr):
    x, e = rand_tensor(15, 3, 64, 64), rand_tensor(16, 3, 64, 64)
    uncached = Translator.load(tiny_checkpoint, exemplar_cache=0)
    assert torch.equal(uncached.translate(x, e).image, uncached.translate(x, e).image)
    # With the exemplar cache, the first call encodes input and exemplar in one batch and later calls
    # encode the input alone: equal up to the last bits of a conv, then bit-identical from call to call.
    first, second, third = (tr.translate(x, e).image for _ in range(3))
    assert torch.equal(second, third)
    assert max_diff(first, second) < 1e-5


def test_translator_matches_the_generator(tiny_checkpoint, tr):
    """At the model's size with a tensor input, the Translator is the generator's forward pass."""
    from lmt_fast.io import load_checkpoint

    g = load_checkpoint(tiny_checkpoint).generator
    x, e = rand_tensor(17, 1, 3, 64, 64), rand_tensor(18, 1, 3, 64, 64)
    with torch.no_grad():
        expected = g(x, e)
    r = tr.translate(x, e)
    assert max_diff(r.image, expected.image) < 1e-5
    assert max_diff(r.input_mask, torch.nn.functional.interpolate(expected.input_mask, size=(64, 64),
                                                                  mode="bilinear", align_corners=False)) < 1e-5


# --------------------------------------------------------------------------------------------------
# encode_exemplar and translate_batch
# --------------------------------------------------------------------------------------------------

def test_encode_exemplar_and_reuse(tr, image_files):
    style = tr.encode_exemplar(image_files.gray_png)
    assert isinstance(style, ExemplarStyle)
    assert isinstance(style.mask, Image.Image) and style.mask.size == (90, 90)
    assert any("grayscale" in n for n in style.notes)
    r = tr.translate(image_files.rgb_png, style)
    assert r.image.size == (300, 200)
    assert r.exemplar_mask is style.mask
    assert any("grayscale" in n for n in r.notes)  # the exemplar's notes travel with the style


def test_encoded_style_is_used(styled):
    x = rand_tensor(19, 3, 64, 64)
    s1 = styled.encode_exemplar(rand_tensor(20, 3, 64, 64))
    s2 = styled.encode_exemplar(rand_tensor(21, 3, 64, 64) * 0.2)
    assert max_diff(styled.translate(x, s1).image, styled.translate(x, s2).image) > 1e-3


def test_translate_batch_equals_one_by_one(styled):
    inputs = [rand_tensor(30 + i, 3, 64, 64) for i in range(5)]
    style = styled.encode_exemplar(rand_tensor(40, 3, 64, 64))
    batched = styled.translate_batch(inputs, style, batch_size=2)  # 2 + 2 + 1
    assert len(batched) == 5
    for x, rb in zip(inputs, batched):
        r1 = styled.translate(x, style)
        assert rb.image.shape == x.shape
        assert max_diff(rb.image, r1.image) < 1e-5
        assert max_diff(rb.input_mask, r1.input_mask) < 1e-5


def test_translate_batch_with_exemplar_image_encodes_it_once(styled):
    inputs = [rand_tensor(50 + i, 3, 64, 64) for i in range(3)]
    e = rand_tensor(60, 3, 64, 64)
    batched = styled.translate_batch(inputs, e)
    style = styled.encode_exemplar(e)
    for x, rb in zip(inputs, batched):
        assert max_diff(rb.image, styled.translate(x, style).image) < 1e-5


def test_translate_batch_mixed_kinds_and_sizes(tr, image_files):
    inputs = [image_files.rgb_png, image_files.arrays["gray_png"], rand_tensor(70, 1, 3, 32, 48)]
    results = tr.translate_batch(inputs, image_files.rgb64_png)
    assert results[0].image.size == (300, 200)
    assert results[1].image.shape == (90, 90, 3) and results[1].image.dtype == np.uint8
    assert results[2].image.shape == (1, 3, 32, 48)
    style = tr.encode_exemplar(image_files.rgb64_png)
    # batched float arithmetic may flip a rounding to uint8: one level at most
    assert np.abs(np.asarray(results[0].image, dtype=int) - np.asarray(tr.translate(inputs[0], style).image, dtype=int)).max() <= 1
    assert np.abs(results[1].image.astype(int) - tr.translate(inputs[1], style).image.astype(int)).max() <= 1


def test_translate_batch_with_masks(styled):
    inputs = [rand_tensor(80 + i, 3, 64, 64) for i in range(3)]
    masks = [torch.zeros(64, 64), torch.ones(64, 64), torch.zeros(64, 64)]
    style = styled.encode_exemplar(rand_tensor(90, 3, 64, 64))
    results = styled.translate_batch(inputs, style, input_masks=masks)
    for x, m, r in zip(inputs, masks, results):
        assert max_diff(r.input_mask[0], m) < 1e-6
        assert max_diff(r.image, styled.translate(x, style, input_mask=m).image) < 1e-5
    # some masks given, some learned
    mixed = styled.translate_batch(inputs, style, input_masks=[None, torch.ones(64, 64), None])
    assert max_diff(mixed[0].image, styled.translate(inputs[0], style).image) < 1e-5
    assert max_diff(mixed[0].input_mask, styled.translate(inputs[0], style).input_mask) < 1e-5
    assert mixed[1].input_mask.min().item() == 1
    assert 0 < mixed[2].input_mask.mean().item() < 1


def test_translate_batch_bad_arguments(tr):
    x = rand_tensor(1, 3, 64, 64)
    with pytest.raises(TranslatorError, match="takes a list of inputs"):
        tr.translate_batch("one.png", x)
    with pytest.raises(TranslatorError, match="takes a list of inputs"):
        tr.translate_batch(x, x)
    with pytest.raises(TranslatorError, match="2 input masks for 1 inputs"):
        tr.translate_batch([x], x, input_masks=[None, None])
    with pytest.raises(TranslatorError, match="batch_size must be >= 1"):
        tr.translate_batch([x], x, batch_size=0)


def test_exemplar_mask_with_encoded_style_is_refused(tr):
    style = tr.encode_exemplar(rand_tensor(1, 3, 64, 64))
    with pytest.raises(TranslatorError, match="exemplar_mask cannot be given with an encoded exemplar"):
        tr.translate(rand_tensor(2, 3, 64, 64), style, exemplar_mask=torch.ones(64, 64))


# --------------------------------------------------------------------------------------------------
# user masks (the paper's user intervention)
# --------------------------------------------------------------------------------------------------

def test_zero_input_mask_makes_the_exemplar_irrelevant(styled):
    x = rand_tensor(100, 3, 64, 64)
    e1, e2 = rand_tensor(101, 3, 64, 64), rand_tensor(102, 3, 64, 64) * 0.2
    zeros = torch.zeros(64, 64)
    a = styled.translate(x, e1, input_mask=zeros)
    b = styled.translate(x, e2, input_mask=zeros)
    assert max_diff(a.image, b.image) < 1e-5
    # ... and the same holds for an encoded exemplar
    c = styled.translate(x, styled.encode_exemplar(e2), input_mask=zeros)
    assert max_diff(a.image, c.image) < 1e-5
    # the returned mask is the given one, not the learned one
    assert a.input_mask.abs().max().item() == 0
    assert styled.translate(x, e1).input_mask.max().item() > 0.05


@pytest.mark.parametrize("region", ["all", "box"])
def test_non_trivial_input_mask_lets_the_exemplar_in(styled, region):
    x = rand_tensor(110, 3, 64, 64)
    e1, e2 = rand_tensor(111, 3, 64, 64), rand_tensor(112, 3, 64, 64) * 0.2
    mask = torch.ones(64, 64) if region == "all" else torch.zeros(64, 64)
    if region == "box":
        mask[16:48, 16:48] = 1
    a = styled.translate(x, e1, input_mask=mask).image
    b = styled.translate(x, e2, input_mask=mask).image
    assert max_diff(a, b) > 1e-3
    if region == "box":
        # far outside the box the exemplar cannot reach (conv receptive field aside, it is much weaker)
        inside = (a - b)[:, 24:40, 24:40].abs().mean()
        corner = (a - b)[:, :8, :8].abs().mean()
        assert inside > 3 * corner


def test_returned_input_mask_is_the_given_one(styled):
    x = rand_tensor(120, 3, 64, 64)
    mask = torch.zeros(64, 64)
    mask[16:48, 8:40] = 1  # aligned with the 4-pixel grid of the content resolution
    r = styled.translate(x, rand_tensor(121, 3, 64, 64), input_mask=mask)
    got = r.input_mask[0]
    assert got.shape == (64, 64)
    assert (got[18:46, 10:38] == 1).all()          # interior
    assert got[:14].max() == 0 and got[50:].max() == 0 and got[:, 42:].max() == 0
    assert (got - mask).abs().mean() < 0.05


def test_given_masks_are_resized_with_their_images(tr, image_files):
    mask = np.zeros((200, 300), dtype=np.float32)
    mask[:, 150:] = 1.0
    ex_mask = np.ones((90, 90), dtype=np.uint8) * 255
    r = tr.translate(image_files.rgb_png, image_files.gray_png, input_mask=mask, exemplar_mask=ex_mask)
    got = np.asarray(r.input_mask, dtype=np.float32) / 255
    assert got.shape == (200, 300)
    # the model works at 64x64 and masks at 16x16 (one mask pixel = 18.75 input columns): the edge at
    # column 150 blurs over about one mask pixel on each side
    assert got[:, :110].max() == 0 and got[:, 190:].min() == 1
    assert abs(got.mean() - 0.5) < 0.02
    assert np.asarray(r.exemplar_mask).min() == 255 and r.exemplar_mask.size == (90, 90)


@pytest.mark.parametrize("kind", ["path", "pil", "numpy_uint8", "numpy_float", "tensor", "tensor_1hw"])
def test_mask_kinds_are_equivalent(tr, tmp_path, kind):
    values = np.zeros((64, 64), dtype=np.uint8)
    values[:, :32] = 255
    if kind == "path":
        Image.fromarray(values, mode="L").save(tmp_path / "m.png")
        mask = tmp_path / "m.png"
    elif kind == "pil":
        mask = Image.fromarray(values, mode="L")
    elif kind == "numpy_uint8":
        mask = values
    elif kind == "numpy_float":
        mask = values.astype(np.float32) / 255
    elif kind == "tensor":
        mask = torch.from_numpy(values).float() / 255
    else:
        mask = torch.from_numpy(values).float()[None] / 255
    x, e = rand_tensor(130, 3, 64, 64), rand_tensor(131, 3, 64, 64)
    reference = tr.translate(x, e, input_mask=torch.from_numpy(values).float() / 255)
    r = tr.translate(x, e, input_mask=mask)
    # 1e-5 on the image: the first call may miss the exemplar cache (input and exemplar encoded in one
    # batch) and the second hit it (input encoded alone), which can move the last bits of a conv.
    assert max_diff(r.image, reference.image) < 1e-5
    assert max_diff(r.input_mask, reference.input_mask) < 1e-6


def test_exemplar_masks_override(styled):
    x = rand_tensor(140, 3, 64, 64)
    e1, e2 = rand_tensor(141, 3, 64, 64), rand_tensor(142, 3, 64, 64) * 0.2
    ones, zeros = torch.ones(64, 64), torch.zeros(64, 64)
    # An empty exemplar mask: the foreground style is that of a black image, whatever the exemplar.
    a = styled.translate(x, e1, input_mask=ones, exemplar_mask=zeros)
    b = styled.translate(x, e2, input_mask=ones, exemplar_mask=zeros)
    assert max_diff(a.image, b.image) < 1e-5
    assert a.exemplar_mask.abs().max().item() == 0
    # A full exemplar mask lets the exemplar's style through.
    c = styled.translate(x, e1, input_mask=ones, exemplar_mask=ones)
    d = styled.translate(x, e2, input_mask=ones, exemplar_mask=ones)
    assert max_diff(c.image, d.image) > 1e-3
    assert c.exemplar_mask.min().item() == 1
    # encode_exemplar honours a given mask too
    s = styled.encode_exemplar(e2, exemplar_mask=zeros)
    assert max_diff(styled.translate(x, s, input_mask=ones).image, a.image) < 1e-5


# --------------------------------------------------------------------------------------------------
# resize policy
# --------------------------------------------------------------------------------------------------

def test_resize_none_runs_at_native_size(tiny_checkpoint):
    t = Translator.load(tiny_checkpoint, resize="none")
    x = rand_uint8(150, 48, 80, 3)
    r = t.translate(x, rand_uint8(151, 48, 80, 3))
    assert r.image.shape == (48, 80, 3)
    assert r.notes == []
    # Native size means the model saw 48x80, not a 64x64 resize: the result differs from resize="model".
    resized = Translator.load(tiny_checkpoint).translate(x, rand_uint8(151, 48, 80, 3)).image
    assert np.abs(r.image.astype(int) - resized.astype(int)).max() > 0
    # an encoded exemplar of another size is fine
    r2 = t.translate(x, t.encode_exemplar(rand_uint8(152, 32, 32, 3)))
    assert r2.image.shape == (48, 80, 3)


def test_resize_none_refuses_other_sizes(tiny_checkpoint):
    t = Translator.load(tiny_checkpoint, resize="none")
    with pytest.raises(TranslatorError, match=rf"input is 50x50; with resize='none' both sides must be multiples of {MULT}"):
        t.translate(rand_uint8(1, 50, 50, 3), rand_uint8(2, 64, 64, 3))
    with pytest.raises(TranslatorError, match="exemplar is 64x40"):
        t.translate(rand_uint8(1, 64, 64, 3), rand_uint8(2, 40, 64, 3))
    with pytest.raises(TranslatorError, match="must have the same size"):
        t.translate(rand_uint8(1, 64, 64, 3), rand_uint8(2, 32, 32, 3))


# --------------------------------------------------------------------------------------------------
# dtypes and backends
# --------------------------------------------------------------------------------------------------

def test_bfloat16_is_close_to_float32(tiny_checkpoint, tr):
    t16 = Translator.load(tiny_checkpoint, dtype="bfloat16")
    assert t16.dtype == torch.bfloat16
    x, e = rand_tensor(160, 3, 64, 64), rand_tensor(161, 3, 64, 64)
    a = tr.translate(x, e)
    b = t16.translate(x, e)
    assert b.image.dtype == torch.float32 and b.image.shape == x.shape  # the input's dtype, not the model's
    assert torch.isfinite(b.image).all()
    assert (a.image - b.image).abs().mean().item() < 0.05
    assert (a.input_mask - b.input_mask.float()).abs().mean().item() < 0.05
    # a torch.dtype is accepted as well as its name
    assert Translator.load(tiny_checkpoint, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("backend", ["eager", "reference"])
def test_backends_agree(tiny_checkpoint, tr, backend):
    t = Translator.load(tiny_checkpoint, backend=backend)
    x, e = rand_tensor(170, 3, 64, 64), rand_tensor(171, 3, 64, 64)
    assert max_diff(t.translate(x, e).image, tr.translate(x, e).image) < 1e-5


def test_auto_backend_is_reported(tiny_checkpoint, tr):
    from lmt_fast.runtime.fused import FusedGenerator, fused_unavailable_reason

    reason = fused_unavailable_reason("cpu", torch.float32)
    if reason is None:
        assert tr.backend == "fused" and isinstance(tr.generator, FusedGenerator) and tr.backend_reason is None
        assert tr.op_backend == tr.generator.op_backend != "reference"
    else:
        assert tr.backend == "eager" and tr.op_backend == "reference" and reason in tr.backend_reason
    eager = Translator.load(tiny_checkpoint, backend="eager")
    assert eager.backend == "eager" and eager.op_backend == "reference" and eager.backend_reason is None


# --------------------------------------------------------------------------------------------------
# the exemplar cache
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_exemplar_cache_reuses_the_exemplar_encoding(styled_checkpoint, backend):
    t = Translator.load(styled_checkpoint, backend=backend)
    plain = Translator.load(styled_checkpoint, backend=backend, exemplar_cache=0)
    module = t.generator.module if t.backend == "fused" else t.generator
    batches = []
    hook = module.content_encoder.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))
    e = rand_tensor(200, 3, SIZE, SIZE)
    try:
        for seed in (201, 202, 203):
            x = rand_tensor(seed, 3, SIZE, SIZE)
            a, b = t.translate(x, e), plain.translate(x, e)
            assert max_diff(a.image, b.image) < 1e-5 and max_diff(a.exemplar_mask, b.exemplar_mask) < 1e-5
    finally:
        hook.remove()
    # the first call encodes input and exemplar together; later ones encode the input alone
    assert batches == [2, 1, 1]
    assert t.cache_info() == {"hits": 2, "misses": 1, "entries": 1, "capacity": 8}
    assert plain.cache_info() == {"hits": 0, "misses": 0, "entries": 0, "capacity": 0}


def test_exemplar_cache_keys_on_pixels_and_mask(styled_checkpoint):
    t = Translator.load(styled_checkpoint, exemplar_cache=2)
    plain = Translator.load(styled_checkpoint, exemplar_cache=0)
    x = rand_tensor(210, 3, SIZE, SIZE)
    e1, e2, e3 = (rand_tensor(s, 3, SIZE, SIZE) for s in (211, 212, 213))
    box = torch.zeros(SIZE, SIZE)
    box[8:40, 16:48] = 1
    t.translate(x, e1)
    t.translate(x, e1.clone())                          # same pixels: a hit
    assert t.cache_info()["hits"] == 1
    r = t.translate(x, e1, exemplar_mask=box)           # same pixels, another mask: a miss
    assert t.cache_info()["misses"] == 2
    again = t.translate(rand_tensor(214, 3, SIZE, SIZE), e1, exemplar_mask=box)  # mask given: style reused
    want = plain.translate(rand_tensor(214, 3, SIZE, SIZE), e1, exemplar_mask=box)
    assert max_diff(again.image, want.image) < 1e-5 and (r.exemplar_mask[0] - box).abs().mean() < 0.05
    assert t.cache_info()["hits"] == 2
    t.translate(x, e2)
    t.translate(x, e3)                                  # capacity 2: e1's entries are evicted, oldest first
    t.translate(x, e1)
    assert t.cache_info() == {"hits": 2, "misses": 5, "entries": 2, "capacity": 2}
    t.clear_cache()
    assert t.cache_info()["entries"] == 0


def test_exemplar_cache_does_not_change_encoded_styles(styled):
    """encode_exemplar / translate_batch are the other (self-conditioned) path: untouched by the cache."""
    e = rand_tensor(220, 3, SIZE, SIZE)
    before = styled.cache_info()
    style = styled.encode_exemplar(e)
    styled.translate_batch([rand_tensor(221, 3, SIZE, SIZE)], style)
    assert styled.cache_info() == before


@pytest.mark.parametrize("value", [-1, 2.5, True, "8"])
def test_bad_exemplar_cache_value(tiny_checkpoint, value):
    with pytest.raises(TranslatorError, match="exemplar_cache must be an int >= 0"):
        Translator.load(tiny_checkpoint, exemplar_cache=value)


def test_styles_move_between_fused_and_eager(tiny_checkpoint, tr):
    eager = Translator.load(tiny_checkpoint, backend="eager")
    e, x = rand_tensor(230, 3, SIZE, SIZE), rand_tensor(231, 3, SIZE, SIZE)
    fused_style, eager_style = tr.encode_exemplar(e), eager.encode_exemplar(e)
    want = eager.translate(x, eager_style).image
    assert max_diff(eager.translate(x, fused_style).image, want) < 1e-4
    assert max_diff(tr.translate(x, eager_style).image, want) < 1e-4


# --------------------------------------------------------------------------------------------------
# bad input: one clear error that names the problem
# --------------------------------------------------------------------------------------------------

def test_error_types_are_value_errors():
    for cls in (TranslatorError, ImageError, CheckpointError):
        assert issubclass(cls, ValueError)


def test_missing_file(tr, tmp_path):
    with pytest.raises(ImageError, match="image not found: .*nope.png"):
        tr.translate(tmp_path / "nope.png", rand_tensor(1, 3, 64, 64))


def test_empty_file(tr, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png is an empty file"):
        tr.translate(rand_tensor(1, 3, 64, 64), tmp_path / "empty.png")


def test_text_file_named_png(tr, tmp_path):
    (tmp_path / "fake.png").write_text("definitely not a PNG")
    with pytest.raises(ImageError, match="fake.png is not an image file"):
        tr.translate(tmp_path / "fake.png", rand_tensor(1, 3, 64, 64))


def test_truncated_png(tr, image_files):
    data = image_files.rgb_png.read_bytes()
    image_files.rgb_png.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="rgb.png could not be decoded"):
        tr.translate(image_files.rgb_png, image_files.rgb64_png)


@pytest.mark.parametrize("shape", [(64, 64), (2, 3, 64, 64, 1), (4, 64, 64), (1, 1, 64, 64), (3, 0, 64)])
def test_wrong_tensor_shapes(tr, shape):
    bad = torch.zeros(*shape)
    with pytest.raises(TranslatorError, match=r"input: (tensors must have shape|empty tensor)"):
        tr.translate(bad, rand_tensor(1, 3, 64, 64))


def test_batch_tensor_to_translate(tr):
    with pytest.raises(TranslatorError, match="translate takes one image, got a batch of 2; use translate_batch"):
        tr.translate(rand_tensor(1, 2, 3, 64, 64), rand_tensor(2, 3, 64, 64))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_tensor_with_nan_or_inf(tr, value):
    x = rand_tensor(1, 3, 64, 64)
    x[1, 5, 7] = value
    with pytest.raises(TranslatorError, match="exemplar: tensor contains NaN or infinite values"):
        tr.translate(rand_tensor(2, 3, 64, 64), x)


def test_tensor_out_of_range(tr):
    x = torch.rand(3, 64, 64) * 255  # a classic mistake: 0..255 floats
    with pytest.raises(TranslatorError, match=r"tensor values must lie in \[-1, 1\]"):
        tr.translate(x, rand_tensor(2, 3, 64, 64))


def test_uint8_tensor(tr):
    with pytest.raises(TranslatorError, match="tensors must be floating point.*torch.uint8"):
        tr.translate(torch.zeros(3, 64, 64, dtype=torch.uint8), rand_tensor(2, 3, 64, 64))


def test_float_numpy_array(tr):
    with pytest.raises(TranslatorError, match="numpy images must be uint8.*float32"):
        tr.translate(np.zeros((64, 64, 3), dtype=np.float32), rand_tensor(2, 3, 64, 64))


def test_numpy_wrong_layout(tr):
    with pytest.raises(TranslatorError, match=r"got shape \(3, 64, 64\)"):
        tr.translate(np.zeros((3, 64, 64), dtype=np.uint8), rand_tensor(2, 3, 64, 64))


def test_unsupported_type(tr):
    with pytest.raises(TranslatorError, match="unsupported type list"):
        tr.translate([[0, 1], [2, 3]], rand_tensor(2, 3, 64, 64))


def test_mask_of_the_wrong_size(tr, image_files):
    with pytest.raises(TranslatorError, match="input_mask is 64x64 but its image is 300x200"):
        tr.translate(image_files.rgb_png, image_files.rgb64_png, input_mask=np.zeros((64, 64), np.float32))
    with pytest.raises(TranslatorError, match="exemplar_mask is 300x200 but its image is 64x64"):
        tr.translate(image_files.rgb_png, image_files.rgb64_png, exemplar_mask=np.zeros((200, 300), np.float32))


def test_mask_with_values_above_one(tr):
    mask = torch.ones(64, 64) * 1.5
    with pytest.raises(TranslatorError, match=r"input_mask: mask values must lie in \[0, 1\]"):
        tr.translate(rand_tensor(1, 3, 64, 64), rand_tensor(2, 3, 64, 64), input_mask=mask)
    with pytest.raises(TranslatorError, match=r"mask values must lie in \[0, 1\]"):
        tr.translate(rand_tensor(1, 3, 64, 64), rand_tensor(2, 3, 64, 64), input_mask=-torch.ones(64, 64))


def test_mask_with_nan(tr):
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[3, 3] = np.nan
    with pytest.raises(TranslatorError, match="exemplar_mask: mask contains NaN"):
        tr.translate(rand_tensor(1, 3, 64, 64), rand_tensor(2, 3, 64, 64), exemplar_mask=mask)


def test_mask_with_channels(tr):
    with pytest.raises(TranslatorError, match="a mask must be a single channel"):
        tr.translate(rand_tensor(1, 3, 64, 64), rand_tensor(2, 3, 64, 64), input_mask=torch.zeros(3, 64, 64))


def test_missing_mask_file(tr, tmp_path):
    with pytest.raises(TranslatorError, match="input_mask: mask not found or empty"):
        tr.translate(rand_tensor(1, 3, 64, 64), rand_tensor(2, 3, 64, 64), input_mask=tmp_path / "m.png")


def test_unknown_dtype(tiny_checkpoint):
    with pytest.raises(TranslatorError, match="dtype must be one of .*'float8'"):
        Translator.load(tiny_checkpoint, dtype="float8")
    with pytest.raises(TranslatorError, match="dtype must be one of"):
        Translator.load(tiny_checkpoint, dtype=torch.int32)


def test_unknown_backend(tiny_checkpoint):
    with pytest.raises(TranslatorError, match="backend 'warp-drive' is not usable here.*reference"):
        Translator.load(tiny_checkpoint, backend="warp-drive")


def test_unknown_resize_policy(tiny_checkpoint):
    with pytest.raises(TranslatorError, match=r"resize must be one of \['model', 'none'\], got 'crop'"):
        Translator.load(tiny_checkpoint, resize="crop")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so asking for it is no error")
def test_cuda_when_unavailable(tiny_checkpoint):
    with pytest.raises(TranslatorError, match="'cuda' requested but CUDA is not available"):
        Translator.load(tiny_checkpoint, device="cuda")


def test_bad_checkpoint_path(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Translator.load(tmp_path / "missing")


@pytest.mark.skipif((DEFAULT_MODEL / "config.json").is_file(),
                    reason="a default model is shipped, so from_pretrained has something to load")
def test_from_pretrained_without_a_shipped_model():
    with pytest.raises(FileNotFoundError, match=r"no embedded default model.*Translator\.load"):
        Translator.from_pretrained()
    with pytest.raises(FileNotFoundError, match="no embedded model named 'other'"):
        Translator.from_pretrained("other")
