"""The MGST generator: sizes, backends, the two style paths, region independence, checkpoints."""
import pytest
import torch

from lmt_fast import ops
from lmt_fast.io import CheckpointError
from lmt_fast.models.mgst import (
    MGSTConfig, MGSTDiscriminator, MGSTGenerator, MGSTStyle, count_parameters, load_mgst_checkpoint,
    save_mgst_checkpoint,
)


def _images(n, size=(36, 60), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g) * 2 - 1


def _block_masks(n, size=(36, 60), seed=0):
    """Hard masks made of whole 4x4 blocks (so the area-pooled feature masks are hard too), both regions present."""
    g = torch.Generator().manual_seed(seed)
    h, w = size[0] // 4, size[1] // 4
    masks = torch.zeros(n, 1, h, w)
    for i in range(n):
        top = int(torch.randint(0, h - 4, (1,), generator=g))
        left = int(torch.randint(0, w - 5, (1,), generator=g))
        masks[i, :, top:top + 4, left:left + 5] = 1
    return torch.nn.functional.interpolate(masks, scale_factor=4, mode="nearest")


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(3)
    g = MGSTGenerator(MGSTConfig.small()).eval()
    # a non-trivial stored style (an untrained model stores zeros / ones)
    with torch.no_grad():
        g.set_stored_style(g.style_from_image(_images(4, seed=9), _block_masks(4, seed=9)), 4)
    return g


def test_parameter_counts_and_shapes(generator):
    cfg = generator.config
    assert (cfg.image_size, cfg.content_dim, cfg.size_multiple) == ((36, 60), 64, 4)
    assert count_parameters(generator.encoder) == 192_656
    assert count_parameters(generator.decoder) == 214_723
    assert count_parameters(generator) == 407_379
    assert count_parameters(MGSTDiscriminator(cfg)) == 42_417
    assert count_parameters(MGSTGenerator(MGSTConfig.johnson())) == 1_910_179
    x, m = _images(2), _block_masks(2)
    with torch.no_grad():
        y = generator(x, m)
        s = generator.style_from_image(x, m)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert s.gamma.shape == s.beta.shape == (2, 2, 64)
    assert MGSTDiscriminator(cfg)(y).shape == (2, 1, 4, 7)
    with torch.no_grad():  # fully convolutional: any multiple of 4
        assert generator(_images(1, (48, 80)), _block_masks(1, (48, 80))).shape == (1, 3, 48, 80)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="multiples of 4"):
        MGSTConfig(image_height=37)
    with pytest.raises(ValueError, match="mask_mode"):
        MGSTConfig(mask_mode="local")
    with pytest.raises(ValueError, match="unknown MGSTConfig fields: bogus"):
        MGSTConfig.from_dict({"bogus": 1})
    cfg = MGSTConfig.johnson(mask_mode="global")
    assert MGSTConfig.from_dict(cfg.to_dict()) == cfg


def test_region_model_requires_a_mask(generator):
    with pytest.raises(ValueError, match="attention mask"):
        generator(_images(1))
    with pytest.raises(ValueError, match=r"shape \(N, 1, H, W\)"):
        generator(_images(1), torch.ones(1, 1, 18, 30))


@pytest.mark.parametrize("backend", [b for b in ("cpu",) if b in ops.available_backends("cpu")])
def test_fast_backend_matches_reference(generator, backend):
    x, m = _images(3, seed=1), _block_masks(3, seed=1)
    soft = torch.nn.functional.avg_pool2d(m, 3, 1, 1)  # soft edges too
    outs = {}
    for name in ("reference", backend):
        generator.set_backend(name)
        with torch.no_grad():
            style = generator.style_from_image(_images(3, seed=2), soft)
            outs[name] = (generator(x, soft), generator(x, soft, style), style.gamma, style.beta)
    generator.set_backend("auto")
    for ref, fast in zip(outs["reference"], outs[backend]):
        torch.testing.assert_close(fast, ref, atol=2e-5, rtol=1e-4)


def test_stored_style_equals_the_style_image_it_stores(generator):
    x, m = _images(2, seed=4), _block_masks(2, seed=4)
    xs, ms = _images(1, seed=5), _block_masks(1, seed=5)
    g = MGSTGenerator(generator.config).eval()
    g.load_state_dict(generator.state_dict())
    with torch.no_grad():
        style = g.style_from_image(xs, ms)
        with_image = g(x, m, style)
        before = g(x, m)
        g.set_stored_style(style, 1)
        stored = g(x, m)
    torch.testing.assert_close(stored, with_image, atol=1e-6, rtol=0)
    assert (before - stored).abs().max() > 1e-3  # the stored style really changed
    assert int(g.style_images) == 1


def test_changing_one_regions_style_changes_only_that_region(generator):
    """Exact at the renormalisation: with hard masks, a new attention style leaves background features
    bit-identical. In the image (the decoder's LayerNorm and convolutions mix positions) the change
    concentrates in the attention region."""
    x, m = _images(2, seed=6), _block_masks(2, seed=6)
    g = generator
    with torch.no_grad():
        base = g.stored_style(2)
        other = g.style_from_image(_images(2, seed=7), _block_masks(2, seed=8))
        new_att = base.with_region(0, other)
        h = g.encode(x, m)
        masks = g.feature_masks(m, h)
        assert set(masks.unique().tolist()) <= {0.0, 1.0}
        feat = [ops.region_adain(h, masks, s.gamma, s.beta, stats="region", eps=g.config.style_eps)
                for s in (base, new_att)]
        background = masks[:, 1:2].expand_as(h) > 0.5
        assert torch.equal(feat[0][background], feat[1][background])
        assert (feat[0] - feat[1])[~background].abs().max() > 1e-2
        # stats="region": each region of the renormalised features has exactly its style's moments
        mean, var = ops.masked_moments(feat[1], masks, eps=1e-12)
        torch.testing.assert_close(mean, new_att.beta, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(var.sqrt(), new_att.gamma, atol=1e-3, rtol=1e-3)
        # and decode really feeds those features to the decoder
        torch.testing.assert_close(g.decoder(feat[1]), g.decode(h, masks, new_att))
        y0, y1 = g.decode(h, masks, base), g.decode(h, masks, new_att)
    change = (y1 - y0).abs().mean(dim=1, keepdim=True)
    inside = (change * m).sum() / m.sum()
    outside = (change * (1 - m)).sum() / (1 - m).sum()
    assert inside > 3 * outside


def test_global_baseline_ignores_the_mask():
    torch.manual_seed(0)
    g = MGSTGenerator(MGSTConfig.small(mask_mode="global")).eval()
    x = _images(2, seed=3)
    with torch.no_grad():
        a = g(x, _block_masks(2, seed=1))
        b = g(x, _block_masks(2, seed=2))
        c = g(x)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_style_batch_rules():
    s = MGSTStyle(torch.ones(1, 2, 4), torch.zeros(1, 2, 4))
    assert s.expand(3).gamma.shape == (3, 2, 4)
    with pytest.raises(ValueError, match="style batch of 2 cannot serve 3"):
        MGSTStyle(torch.ones(2, 2, 4), torch.zeros(2, 2, 4)).expand(3)


def test_checkpoint_round_trip_and_errors(generator, tmp_path, tiny_checkpoint):
    d = MGSTDiscriminator(generator.config)
    for path in (tmp_path / "dir", tmp_path / "one.safetensors"):
        save_mgst_checkpoint(generator, path, discriminator=d, extra={"note": "test"})
        loaded = load_mgst_checkpoint(path, discriminator=True)
        assert loaded.config == generator.config and loaded.metadata["extra"] == {"note": "test"}
        for key, value in generator.state_dict().items():
            assert torch.equal(loaded.generator.state_dict()[key], value), key
        assert not loaded.generator.training
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(CheckpointError, match="LOMIT translator checkpoint, not an MGST purifier: load it with lmt_fast.Translator.load"):
        load_mgst_checkpoint(tiny_checkpoint)
    with pytest.raises(CheckpointError, match="not found"):
        load_mgst_checkpoint(tmp_path / "nothing")
    other = MGSTGenerator(MGSTConfig.small(base_dim=8))
    save_mgst_checkpoint(other, tmp_path / "small")
    import json

    header = json.loads((tmp_path / "small" / "config.json").read_text())
    header["config"]["base_dim"] = 16
    (tmp_path / "small" / "config.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="does not fit its config.*has shape"):
        load_mgst_checkpoint(tmp_path / "small")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the cuda / triton backends run there)")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_backends_match_reference(generator, backend):
    if backend not in ops.available_backends("cuda"):
        pytest.skip(f"backend {backend!r} is not available here")
    g = MGSTGenerator(generator.config).cuda().eval()
    g.load_state_dict(generator.state_dict())
    x, m = _images(3, seed=1).cuda(), _block_masks(3, seed=1).cuda()
    outs = {}
    for name in ("reference", backend):
        g.set_backend(name)
        with torch.no_grad():
            outs[name] = (g(x, m), g(x, m, g.style_from_image(x.flip(0), m.flip(0))))
    for ref, fast in zip(outs["reference"], outs[backend]):
        torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-3)
