"""Our LOMIT with compat="official" reproduces the official code's outputs.

tests/data/official_lomit_golden.safetensors was produced by running the official model.py (commit
82bb58c) outside this repository with seeded random weights (see official_lomit_golden.md). Only the
tensors are kept here: the official weights, two inputs and the intermediate and final outputs, in
eval mode (running-statistics IN/BN) and train mode (per-instance IN, batch BN).
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lmt_fast.models import LOMITDiscriminator, LOMITGenerator
from lmt_fast.models.lomit import official_highway_adain
from lmt_fast.models.official import convert_official_state_dict, official_config

GOLDEN = Path(__file__).parent / "data" / "official_lomit_golden.safetensors"
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def golden():
    return {k: v.double() if v.is_floating_point() else v for k, v in load_file(str(GOLDEN)).items()}


def _models(golden, compat):
    cfg = official_config(conv_dim=8, repeat_num=8, style_dim=4, mlp_dim=16, image_size=64, d_conv_dim=8,
                          d_repeat_num=5, compat=compat)
    g_state = {k[2:]: v for k, v in golden.items() if k.startswith("G.")}
    d_state = {k[2:]: v for k, v in golden.items() if k.startswith("D.")}
    ours_g, ours_d = convert_official_state_dict(g_state, cfg, d_state)
    g, d = LOMITGenerator(cfg).double(), LOMITDiscriminator(cfg).double()
    g.load_state_dict(ours_g, strict=True)
    d.load_state_dict(ours_d, strict=True)
    g.set_backend("reference")
    return g, d


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_pieces_match_official(golden, mode):
    g, d = _models(golden, "official")
    g.train(mode == "train")
    x_a, x_b = golden["x_A"], golden["x_B"]
    want = {k[len(mode) + 1:]: v for k, v in golden.items() if k.startswith(mode + ".")}
    with torch.no_grad():
        c_a, c_b = g.encode_content(x_a), g.encode_content(x_b)
        torch.testing.assert_close(c_a, want["c_A"], **TOL)
        torch.testing.assert_close(c_b, want["c_B"], **TOL)
        torch.testing.assert_close(g.attention(c_b), want["a_A"], **TOL)
        m_a, m_b = g.compute_mask(c_a, c_b), g.compute_mask(c_b, c_a)
        torch.testing.assert_close(m_a, want["m_A"], **TOL)
        torch.testing.assert_close(m_b, want["m_B"], **TOL)
        s_fb = g.encode_style(x_b, m_b, "foreground")
        s_ba = g.encode_style(x_a, m_a, "background")
        torch.testing.assert_close(s_fb, want["s_fB"].flatten(1), **TOL)
        torch.testing.assert_close(s_ba, want["s_bA"].flatten(1), **TOL)
        gamma_f, beta_f = g.decoder.style_affine(s_fb, "foreground")
        torch.testing.assert_close(beta_f, want["f_params"][:, :32], **TOL)
        torch.testing.assert_close(gamma_f, torch.exp(0.5 * want["f_params"][:, 32:]), **TOL)
        gamma_b, beta_b = g.decoder.style_affine(s_ba, "background")
        h = official_highway_adain(c_a, m_a, gamma_f, beta_f, gamma_b, beta_b)
        torch.testing.assert_close(h, want["h"], **TOL)
        torch.testing.assert_close(g.decode(c_a, m_a, s_fb, s_ba), want["x_AB"], **TOL)
        src, cls = d(x_a)
    torch.testing.assert_close(src, want["d_src"], **TOL)
    torch.testing.assert_close(cls, want["d_cls"], **TOL)


def test_full_forward_matches_official_in_eval(golden):
    g, _ = _models(golden, "official")
    g.eval()
    with torch.no_grad():
        out = g(golden["x_A"], golden["x_B"])
    torch.testing.assert_close(out.image, golden["eval.x_AB"], **TOL)
    torch.testing.assert_close(out.input_mask, golden["eval.m_A"], **TOL)
    torch.testing.assert_close(out.exemplar_mask, golden["eval.m_B"], **TOL)


def test_paper_mode_differs_only_where_the_paper_does(golden):
    """Paper mode: true spatial std in HAdaIN and per-instance IN at eval; everything else is shared."""
    g, _ = _models(golden, "paper")
    g.eval()
    x_a, x_b = golden["x_A"], golden["x_B"]
    with torch.no_grad():
        c_a = g.encode_content(x_a)
        # per-instance IN at eval = the official train-mode content code
        torch.testing.assert_close(c_a, golden["train.c_A"], **TOL)
        out = g(x_a, x_b)
        m_a = out.input_mask
        s_fb = g.encode_style(x_b, out.exemplar_mask, "foreground")
        s_ba = g.encode_style(x_a, m_a, "background")
        gamma_f, beta_f = g.decoder.style_affine(s_fb, "foreground")
        gamma_b, beta_b = g.decoder.style_affine(s_ba, "background")
    mean = c_a.mean(dim=(2, 3), keepdim=True)
    std = c_a.var(dim=(2, 3), unbiased=False, keepdim=True).add(1e-5).sqrt()
    n = (c_a - mean) / std
    h = m_a * (gamma_f[..., None, None] * n + beta_f[..., None, None]) + \
        (1 - m_a) * (gamma_b[..., None, None] * n + beta_b[..., None, None])
    x = h
    for block in g.decoder.blocks:
        x = block(x)
    for layer in g.decoder.up:
        x = layer(F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(out.image, g.decoder.out(x), **TOL)
    assert (out.image - golden["eval.x_AB"]).abs().max() > 1e-3  # the two modes really differ


def test_converter_rejects_foreign_keys(golden):
    cfg = official_config(conv_dim=8, repeat_num=8, style_dim=4, mlp_dim=16, image_size=64, d_conv_dim=8,
                          d_repeat_num=5)
    g_state = {k[2:]: v for k, v in golden.items() if k.startswith("G.")}
    g_state["something.else.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="something.else.weight"):
        convert_official_state_dict(g_state, cfg)


def test_cli_converts_official_pth_files(golden, tmp_path):
    """`lmt-fast convert-official` reads official .pth state dicts; the result reproduces the official output."""
    from lmt_fast.cli import main
    from lmt_fast.io import load_checkpoint

    for prefix, name in (("G.", "G_exemplar_test.pth"), ("D.", "D_exemplar_test.pth")):
        torch.save({k[2:]: v.float() for k, v in golden.items() if k.startswith(prefix)}, tmp_path / name)
    out = tmp_path / "converted"
    assert main(["convert-official", str(tmp_path / "G_exemplar_test.pth"), "--discriminator",
                 str(tmp_path / "D_exemplar_test.pth"), "-o", str(out)]) == 0
    ckpt = load_checkpoint(out, discriminator=True)
    assert ckpt.config.compat == "official" and ckpt.config.image_size == 64 and ckpt.config.base_dim == 8
    g = ckpt.generator.double().eval()
    with torch.no_grad():
        image = g(golden["x_A"], golden["x_B"]).image
        src, _ = ckpt.discriminator.double()(golden["x_A"])
    torch.testing.assert_close(image, golden["eval.x_AB"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(src, golden["eval.d_src"], rtol=1e-9, atol=1e-9)


def test_cli_convert_rejects_a_foreign_file(tmp_path, capsys):
    from lmt_fast.cli import main

    torch.save({"some.weight": torch.zeros(2)}, tmp_path / "x.pth")
    assert main(["convert-official", str(tmp_path / "x.pth"), "-o", str(tmp_path / "out")]) == 2
    assert "not an official LOMIT generator" in capsys.readouterr().err
