"""The LOMIT networks: sizes, shapes, the split (stateless) inference API and its equivalences."""
import pytest
import torch

from lmt_fast.models import LOMITConfig, LOMITDiscriminator, LOMITGenerator, count_parameters


def _images(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return LOMITGenerator(LOMITConfig.tiny()).eval()


def test_paper_model_has_the_official_size():
    cfg = LOMITConfig.paper()
    g = LOMITGenerator(cfg)
    # reference/lomit.md §2.5: 5,390,848 + 2,764,936 + 3,806,721 + 6,158,083
    assert count_parameters(g.content_encoder) == 5_390_848
    assert count_parameters(g.style_encoder) == 2_764_936
    assert count_parameters(g.mask_net) == 3_806_721
    assert count_parameters(g.decoder) == 6_158_083
    assert count_parameters(g) == 18_120_588
    assert count_parameters(LOMITDiscriminator(cfg)) == 44_753_861
    assert (cfg.image_size, cfg.content_dim, cfg.style_dim) == (128, 256, 8)


def test_shapes(tiny):
    cfg = tiny.config
    x, y = _images(2, cfg.image_size, 0), _images(2, cfg.image_size, 1)
    with torch.no_grad():
        out = tiny(x, y)
        src, cls = LOMITDiscriminator(cfg)(x)
    h = cfg.image_size // cfg.mask_scale
    assert out.image.shape == x.shape
    assert out.input_mask.shape == out.exemplar_mask.shape == (2, 1, h, h)
    assert out.image.abs().max() <= 1 and 0 <= out.input_mask.min() and out.input_mask.max() <= 1
    assert src.shape == (2, 1, 2, 2) and cls.shape == (2, cfg.num_attributes)


def test_generator_is_fully_convolutional(tiny):
    x = _images(1, 48, 2)  # not the training size, still a multiple of size_multiple
    with torch.no_grad():
        assert tiny(x, _images(1, 48, 3)).image.shape == x.shape


def test_forward_equals_the_pieces(tiny):
    """The batched inference forward is the paper's pairing: each mask conditioned on the other image."""
    x, y = _images(3, 64, 4), _images(3, 64, 5)
    with torch.no_grad():
        out = tiny(x, y)
        c_x, c_y = tiny.encode_content(x), tiny.encode_content(y)
        m_x, m_y = tiny.compute_mask(c_x, c_y), tiny.compute_mask(c_y, c_x)
        s_f = tiny.encode_style(y, m_y, "foreground")
        s_b = tiny.encode_style(x, m_x, "background")
        image = tiny.decode(c_x, m_x, s_f, s_b)
    torch.testing.assert_close(out.input_mask, m_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.exemplar_mask, m_y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.image, image, rtol=1e-5, atol=1e-5)


def test_results_do_not_depend_on_batch_neighbours(tiny):
    x, y = _images(4, 64, 6), _images(4, 64, 7)
    with torch.no_grad():
        batched = tiny(x, y).image
        single = torch.cat([tiny(x[i:i + 1], y[i:i + 1]).image for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


def test_encoded_exemplar_is_reusable(tiny):
    x, y = _images(3, 64, 8), _images(1, 64, 9)
    with torch.no_grad():
        code = tiny.encode_exemplar(y)
        out = tiny.translate_encoded(x, code)
        # by definition: exemplar mask conditioned on itself, input mask on the exemplar
        c_x, c_y = tiny.encode_content(x), tiny.encode_content(y)
        m_y = tiny.compute_mask(c_y, c_y)
        m_x = tiny.compute_mask(c_x, c_y.expand(3, -1, -1, -1))
        want = tiny.decode(c_x, m_x, tiny.encode_style(y, m_y, "foreground").expand(3, -1),
                           tiny.encode_style(x, m_x, "background"))
    torch.testing.assert_close(out.image, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.exemplar_mask, m_y.expand(3, -1, -1, -1), rtol=1e-5, atol=1e-6)


def test_user_mask_replaces_the_learned_one(tiny):
    x, y1, y2 = _images(1, 64, 10), _images(1, 64, 11), _images(1, 64, 12)
    zeros = torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        a = tiny(x, y1, input_mask=zeros)
        b = tiny(x, y2, input_mask=zeros)
        c = tiny(x, y2, input_mask=torch.ones(1, 1, 64, 64))
    # with an empty input mask the exemplar's foreground style is unused: the exemplar cannot matter
    torch.testing.assert_close(a.image, b.image, rtol=1e-5, atol=1e-5)
    assert a.input_mask.abs().max() == 0
    assert (c.image - b.image).abs().max() > 1e-3


def test_inference_forward_assigns_nothing_to_modules(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    names = set(vars(tiny.decoder))
    with torch.no_grad():
        tiny(_images(2, 64, 13), _images(2, 64, 14))
    assert set(vars(tiny.decoder)) == names
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradients_reach_every_generator_parameter():
    torch.manual_seed(2)
    g = LOMITGenerator(LOMITConfig.tiny()).train()
    out = g(_images(2, 64, 15), _images(2, 64, 16))
    (out.image.square().mean() + out.input_mask.mean() + out.exemplar_mask.mean()).backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_global_baseline_has_no_mask_network_and_restyles_everything():
    torch.manual_seed(3)
    learned = LOMITGenerator(LOMITConfig.tiny()).eval()
    baseline = LOMITGenerator(LOMITConfig.tiny(mask_mode="global")).eval()
    assert baseline.mask_net is None
    assert count_parameters(learned) - count_parameters(baseline) == count_parameters(learned.mask_net)
    # Same weights everywhere else: the baseline must equal LOMIT given all-ones masks.
    baseline.load_state_dict({k: v for k, v in learned.state_dict().items() if not k.startswith("mask_net.")})
    x, y = _images(2, 64, 17), _images(2, 64, 18)
    ones = torch.ones(2, 1, 64, 64)
    with torch.no_grad():
        out = baseline(x, y)
        expected = learned(x, y, input_mask=ones, exemplar_mask=ones)
        cached = baseline.translate_encoded(x, baseline.encode_exemplar(y))
    assert torch.equal(out.input_mask, torch.ones_like(out.input_mask))
    assert torch.equal(out.exemplar_mask, torch.ones_like(out.exemplar_mask))
    torch.testing.assert_close(out.image, expected.image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached.image, out.image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(compat="both"), dict(n_res_blocks=3), dict(image_size=72),
                                 dict(attributes=()), dict(base_dim=0), dict(mask_mode="local")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        LOMITConfig.tiny(**bad)


def test_config_round_trips_through_dict():
    cfg = LOMITConfig.tiny(attributes=("Smiling", "Male"), compat="official")
    assert LOMITConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown LOMITConfig fields: colour"):
        LOMITConfig.from_dict({**cfg.to_dict(), "colour": 1})
