"""Folding BatchNorm / running-statistics IN into convs changes nothing at inference."""
import pytest
import torch

from lmt_fast.models import LOMITConfig, LOMITGenerator
from lmt_fast.models.fold import fold_norms
from lmt_fast.models.layers import Norm


def _randomise_norms(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, Norm) and m.kind != "none":
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                if hasattr(m, "running_var"):
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_folded_generator_gives_the_same_translation(compat):
    torch.manual_seed(0)
    g = LOMITGenerator(LOMITConfig.tiny(compat=compat)).double().eval()
    _randomise_norms(g)
    folded = fold_norms(g)
    kinds = {m.kind for m in folded.modules() if isinstance(m, Norm)}
    assert "bn" not in kinds and "in_running" not in kinds
    assert any(m.kind == "bn" for m in g.modules() if isinstance(m, Norm))  # the original is untouched
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64) * 2 - 1
    y = torch.rand(2, 3, 64, 64, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        want, got = g(x, y), folded(x, y)
    torch.testing.assert_close(got.image, want.image, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got.input_mask, want.input_mask, rtol=1e-10, atol=1e-10)
