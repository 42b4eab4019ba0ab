"""The fused runtime (lmt_fast.runtime.fused): same translations as the eager model, on the fused kernels.

Reference: the unfolded eager generator on the reference ops, in float32. Generators here have norms with
random affines and BatchNorm / running-IN statistics learned by a few train-mode passes, so folding them
into the convs is not the identity.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmt_fast import Translator
from lmt_fast.models import LOMITConfig, LOMITGenerator
from lmt_fast.models.layers import ConvNormAct, Norm
from lmt_fast.ops import dispatch
from lmt_fast.runtime import fused
from lmt_fast.runtime.fused import (
    FusedDecoder,
    FusedGenerator,
    FusedRuntimeUnavailable,
    UpsampleConv,
    check_fused,
)
from lmt_fast.translator import TranslatorError

SIZE = 64  # LOMITConfig.tiny().image_size
NO_FUSED_CPU = fused.fused_unavailable_reason("cpu", torch.float32)
needs_fused_cpu = pytest.mark.skipif(NO_FUSED_CPU is not None, reason=f"no fused CPU op backend: {NO_FUSED_CPU}")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda is not available)")

# float32: the fused kernels, folded convs and the phase-split upsampling convs only reorder float32
# arithmetic; over the tiny generator that moves the image by ~1e-5 at most.
F32_ATOL = 5e-5


def rand(seed: int, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def rand_mask(seed: int, n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def trained_generator(compat: str, seed: int = 0) -> LOMITGenerator:
    """A tiny generator whose norms are not at their initial values.

    Affines are random; BatchNorm (mask network) and, for compat="official", the running-statistics
    instance norms learn their statistics in three train-mode passes (momentum 0.5), so fold_norms has
    real work to do.
    """
    torch.manual_seed(seed)
    g = LOMITGenerator(LOMITConfig.tiny(compat=compat))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, Norm) and m.kind != "none":
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
                m.momentum = 0.5
        g.train()
        for step in range(3):
            g(rand(100 + step, 2, 3, SIZE, SIZE), rand(200 + step, 2, 3, SIZE, SIZE))
    g.eval()
    g.set_backend("reference")
    return g


@pytest.fixture(scope="module", params=["paper", "official"])
def generator(request) -> LOMITGenerator:
    g = trained_generator(request.param)
    stats = [m.running_mean for m in g.modules() if isinstance(m, Norm) and hasattr(m, "running_mean")]
    assert stats and all(s.abs().max() > 1e-3 for s in stats)  # folding is not the identity
    return g


def max_err(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("size", [(2, 2), (3, 5), (16, 9)])
def test_upsample_conv_is_the_literal_upsample_then_conv(kernel, size):
    torch.manual_seed(kernel)
    block = ConvNormAct(6, 5, kernel, 1, kernel // 2, "ln", "relu").double()
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.normal_()
    layer = UpsampleConv(block).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    want = block(F.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_upsample_conv_refuses_other_convs():
    with pytest.raises(ValueError, match="stride-1 odd square conv"):
        UpsampleConv(ConvNormAct(4, 4, 4, 2, 1, "ln", "relu"))


def test_paired_forward_is_the_generator_forward(generator):
    """The split form used by the exemplar cache computes exactly what LOMITGenerator.forward does."""
    x, e = rand(1, 2, 3, SIZE, SIZE), rand(2, 2, 3, SIZE, SIZE)
    m_in, m_ex = rand_mask(3, 2, SIZE // 4), rand_mask(4, 2, SIZE)
    with torch.no_grad():
        for masks in [(None, None), (m_in, None), (None, m_ex), (m_in, m_ex)]:
            want = generator(x, e, *masks)
            got, parts = generator.paired_forward(x, e, *masks)
            assert torch.equal(got.image, want.image) and torch.equal(got.exemplar_mask, want.exemplar_mask)
            assert (parts.style_fg is None) == (masks[1] is None)


def test_cached_exemplar_gives_the_uncached_result_in_float64(generator):
    """Reusing the exemplar's content code and attention changes nothing but rounding (float64: none)."""
    g = trained_generator(generator.config.compat).double()
    e = rand(5, 1, 3, SIZE, SIZE).double()
    m_ex = rand_mask(6, 1, SIZE // 4).double()
    with torch.no_grad():
        for exemplar_mask in (None, m_ex):
            _, parts = g.paired_forward(rand(7, 1, 3, SIZE, SIZE).double(), e, None, exemplar_mask)
            for seed in (8, 9):
                x = rand(seed, 1, 3, SIZE, SIZE).double()
                for input_mask in (None, rand_mask(seed, 1, SIZE // 4).double()):
                    want = g(x, e, input_mask, exemplar_mask)
                    got = g.paired_forward_cached(x, parts, input_mask)
                    for a, b in zip((got.image, got.input_mask, got.exemplar_mask),
                                    (want.image, want.input_mask, want.exemplar_mask)):
                        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The runtime against the eager model
# --------------------------------------------------------------------------------------------------

@needs_fused_cpu
def test_fused_matches_eager_float32(generator):
    fast = FusedGenerator(generator, device="cpu")
    assert fast.op_backend == "cpu" and fast.cuda_graphs is False and fast.config == generator.config
    x, e = rand(10, 2, 3, SIZE, SIZE), rand(11, 2, 3, SIZE, SIZE)
    m_in, m_ex = rand_mask(12, 2, SIZE // 4), rand_mask(13, 2, SIZE)
    with torch.no_grad():
        for masks in [(None, None), (m_in, None), (None, m_ex), (m_in, m_ex)]:
            want, got = generator(x, e, *masks), fast(x, e, *masks)
            assert got.image.dtype == torch.float32 and got.image.shape == want.image.shape
            assert max_err(got.image, want.image) < F32_ATOL
            assert max_err(got.input_mask, want.input_mask) < 1e-5
            assert max_err(got.exemplar_mask, want.exemplar_mask) < 1e-5
        # the exemplar-cached path: encode once, translate many
        want_code, code = generator.encode_exemplar(e[:1]), fast.encode_exemplar(e[:1])
        assert max_err(code.style_fg, want_code.style_fg) < 1e-5 and max_err(code.mask, want_code.mask) < 1e-5
        for input_mask in (None, m_in):
            want = generator.translate_encoded(x, want_code, input_mask)
            got = fast.translate_encoded(x, code, input_mask)
            assert max_err(got.image, want.image) < F32_ATOL and max_err(got.input_mask, want.input_mask) < 1e-5
        # a code from the eager model serves the fused one (only its attention and style are read)
        assert max_err(fast.translate_encoded(x, want_code).image, generator.translate_encoded(x, want_code).image) \
            < F32_ATOL


@needs_fused_cpu
def test_fused_bfloat16_is_as_accurate_as_eager_bfloat16(generator):
    """bfloat16 keeps 8 significant bits (relative rounding 2**-9 per op), compounded over ~25 conv and
    norm layers; what the fused runtime must guarantee is no worse than the eager model in bfloat16
    (statistics are float32 in both): within twice its error, plus a small slack for rounding luck."""
    eager16 = trained_generator(generator.config.compat).to(torch.bfloat16)
    fast16 = FusedGenerator(generator, device="cpu", dtype=torch.bfloat16)
    x, e = rand(20, 2, 3, SIZE, SIZE), rand(21, 2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = generator(x, e)
        got = fast16(x, e)
        base = eager16(x.bfloat16(), e.bfloat16())
    assert got.image.dtype == torch.bfloat16 and torch.isfinite(got.image.float()).all()
    err, base_err = max_err(got.image, want.image), max_err(base.image, want.image)
    assert err <= 2 * base_err + 0.02, (err, base_err)
    assert (got.image.float() - want.image).abs().mean().item() < 0.03
    assert max_err(got.input_mask, want.input_mask) < 0.02


@needs_fused_cpu
def test_fused_runtime_runs_every_norm_on_the_fused_kernels(generator):
    """Checked from what ran (the profiler's op records), not from configuration alone."""
    fast = FusedGenerator(generator, device="cpu")
    module = fast.module
    assert isinstance(module.decoder, FusedDecoder) and module.decoder.backend == "cpu"
    norms = [m for m in module.modules() if isinstance(m, Norm)]
    assert {m.kind for m in norms} <= {"in", "ln", "none"}  # BatchNorm and running IN folded away
    assert all(m.backend == "cpu" for m in norms if m.kind != "none")
    x, e = rand(30, 1, 3, SIZE, SIZE), rand(31, 1, 3, SIZE, SIZE)
    with torch.profiler.profile() as prof:
        fast(x, e)
    counts = {}
    for event in prof.events():
        counts[event.name] = counts.get(event.name, 0) + 1
    # one forward: each norm module runs once (the twin encoders share one batched call)
    assert counts.get("lmt::instance_norm", 0) == sum(m.kind == "in" for m in norms)
    assert counts.get("lmt::layer_norm", 0) == sum(m.kind == "ln" for m in norms)
    assert counts.get("lmt::region_adain", 0) == 1  # the decoder's HAdaIN, in both compat modes
    unfused = ("aten::batch_norm", "aten::instance_norm", "aten::group_norm", "aten::native_batch_norm",
               "aten::upsample_nearest2d")
    assert not [name for name in unfused if name in counts]


@needs_fused_cpu
def test_activations_are_channels_last(generator):
    fast = FusedGenerator(generator, device="cpu")
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.module.parameters() if p.dim() == 4)
    c = fast.module.encode_content(fast._image(rand(32, 1, 3, SIZE, SIZE)))
    assert c.is_contiguous(memory_format=torch.channels_last)


@needs_fused_cpu
def test_the_callers_generator_is_untouched(generator):
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    FusedGenerator(generator, device="cpu", dtype=torch.bfloat16)
    after = generator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not generator.training and all(m.backend == "reference" for m in generator.modules() if isinstance(m, Norm))


def test_check_fused_names_what_is_not_fused(generator):
    with pytest.raises(RuntimeError, match="'(bn|in_running)' norm left unfolded"):
        check_fused(generator, "reference")
    with pytest.raises(RuntimeError, match="stem.norm runs on op backend 'auto', not 'cpu'"):
        check_fused(LOMITGenerator(LOMITConfig.tiny()), "cpu")


# --------------------------------------------------------------------------------------------------
# Choosing the runtime
# --------------------------------------------------------------------------------------------------

@pytest.fixture
def without_fused_cpu(monkeypatch):
    """The op registry as in an install without lmt_fast._C (restored after the test)."""
    monkeypatch.delitem(dispatch._REGISTRY, "cpu", raising=False)
    from lmt_fast.ops import backends

    monkeypatch.setitem(backends.unavailable, "cpu", "lmt_fast._C is not built (test)")


def test_without_a_fused_backend_the_reason_is_given(without_fused_cpu, tiny_checkpoint):
    with pytest.raises(FusedRuntimeUnavailable, match="no fused op backend runs on cpu.*lmt_fast._C is not built"):
        fused.fused_op_backend("cpu", torch.float32)
    with pytest.raises(TranslatorError, match="backend 'fused' is not usable here: .*_C is not built"):
        Translator.load(tiny_checkpoint, backend="fused")
    t = Translator.load(tiny_checkpoint)  # "auto" falls back, and says why
    assert t.backend == "eager" and t.op_backend == "reference"
    assert "'auto' runs eager" in t.backend_reason and "_C is not built" in t.backend_reason


def test_reference_is_not_a_fused_backend():
    with pytest.raises(FusedRuntimeUnavailable, match="not 'reference'"):
        fused.fused_op_backend("cpu", torch.float32, backend="reference")


@needs_fused_cpu
def test_translator_takes_a_prepared_fused_generator(generator):
    fast = FusedGenerator(generator, device="cpu")
    t = Translator(fast)
    assert t.backend == "fused" and t.generator is fast and t.op_backend == "cpu"
    x, e = rand(40, 3, SIZE, SIZE), rand(41, 3, SIZE, SIZE)
    with torch.no_grad():
        want = generator(x[None], e[None]).image[0]
    assert max_err(t.translate(x, e).image, want) < F32_ATOL
    with pytest.raises(TranslatorError, match="runs on cpu in torch.float32, not on cpu in torch.bfloat16"):
        Translator(fast, dtype="bfloat16")


@needs_fused_cpu
def test_translator_fused_exemplar_cache_hits_and_agrees(generator):
    t = Translator(generator, backend="fused")
    plain = Translator(generator, backend="fused", exemplar_cache=0)
    e = rand(50, 3, SIZE, SIZE)
    m_ex = torch.rand(SIZE, SIZE, generator=torch.Generator().manual_seed(51))
    for exemplar_mask in (None, m_ex):
        for seed in (52, 53, 54):
            x = rand(seed, 3, SIZE, SIZE)
            a, b = t.translate(x, e, exemplar_mask=exemplar_mask), plain.translate(x, e, exemplar_mask=exemplar_mask)
            assert max_err(a.image, b.image) < 1e-5 and max_err(a.exemplar_mask, b.exemplar_mask) < 1e-5
    assert t.cache_info() == {"hits": 4, "misses": 2, "entries": 2, "capacity": 8}
    assert plain.cache_info()["capacity"] == 0


# --------------------------------------------------------------------------------------------------
# CUDA: graphs and half precision
# --------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_graphs_replay_the_eager_result(dtype):
    reason = fused.fused_unavailable_reason("cuda", dtype)
    if reason is not None:
        pytest.skip(reason)
    g = trained_generator("paper")
    with_graphs = FusedGenerator(g, device="cuda", dtype=dtype)
    without = FusedGenerator(g, device="cuda", dtype=dtype, cuda_graphs=False)
    assert with_graphs.cuda_graphs and not without.cuda_graphs
    e = rand(60, 1, 3, SIZE, SIZE).cuda()
    code = with_graphs.encode_exemplar(e)
    for seed in (61, 62, 63):  # first call captures, the others replay with new inputs
        x = rand(seed, 1, 3, SIZE, SIZE).cuda()
        for got, want in ((with_graphs(x, e), without(x, e)),
                          (with_graphs.translate_encoded(x, code), without.translate_encoded(x, code))):
            torch.testing.assert_close(got.image, want.image, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2)
        out, parts = with_graphs.paired_forward(x, e)
        cached = with_graphs.paired_forward_cached(x, parts)
        torch.testing.assert_close(cached.image.float(), out.image.float(), rtol=0,
                                   atol=1e-4 if dtype == torch.float32 else 2e-2)
    assert with_graphs.graphs.captures == 4 and not with_graphs.graphs.failures
    with_graphs(rand(64, 2, 3, SIZE, SIZE).cuda(), rand(65, 2, 3, SIZE, SIZE).cuda())  # a new shape: a new graph
    assert with_graphs.graphs.captures == 5
    # against the eager float32 model on the CPU
    x = rand(66, 1, 3, SIZE, SIZE)
    with torch.no_grad():
        want = g(x, e.cpu())
    tol = F32_ATOL * 10 if dtype == torch.float32 else 0.1
    assert max_err(with_graphs(x.cuda(), e).image.cpu(), want.image) < tol
