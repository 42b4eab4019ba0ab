"""The "cpu" backend (C++ kernels in csrc/cpu, called as torch.ops.lmt.*) against the spec.

Every check draws fresh random inputs (mean -2.3, std 0.5, so a variance taken as E[x^2] - E[x]^2 would
show) and compares with ``lmt_fast.ops.reference`` at every element. Accuracy follows the usual rule for
fused kernels: against a float64 reference, the kernel's error may be at most twice the error of the
reference itself run in the kernel's dtype, plus a small atol.
"""

import warnings
import zlib

import pytest
import torch

from lmt_fast import _extension

if _extension.extension is None:
    pytest.skip(f"the compiled extension is not built ({_extension.unavailable_reason})", allow_module_level=True)

from lmt_fast import ops  # noqa: E402
from lmt_fast.ops import backends, reference  # noqa: E402

if "cpu" not in ops.available_backends("cpu"):
    pytest.skip(f"the cpu backend did not load ({backends.unavailable.get('cpu')})", allow_module_level=True)

from lmt_fast.ops import library  # noqa: E402

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# atol on top of "2x the reference's own error in that dtype".
ATOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}
# (N, C, H, W, K): odd sizes; C in {1, 5, 64}; K = 1, 2, 3 (compile-time paths) and 5 (the generic path).
# 33 x 31 spans several tiles, and 3 x 64 x 33 x 31 is large enough to run on every thread.
SHAPES = [(1, 5, 7, 13, 1), (3, 64, 33, 31, 2), (1, 1, 7, 13, 3), (3, 5, 13, 7, 2), (1, 3, 9, 11, 5)]
LAYOUTS = ("nchw", "channels_last")
ACTIVATIONS = (None, "relu", "lrelu")


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: fresh for every parametrization, reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------------------------------
# Inputs and comparison
# --------------------------------------------------------------------------------------------------


def laid_out(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t.contiguous()


def make_x(gen, n, c, h, w, dtype, layout="nchw"):
    x = -2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    return laid_out(x.to(dtype), layout)


def make_masks(gen, n, k, h, w, kind):
    """kind: "soft", "hard", "empty" (soft, region 0 all zero) or "lowres" (soft, at another size)."""
    if kind == "lowres":
        h, w = max(1, h // 2 + 1), max(1, w // 3 + 2)
    m = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
    if kind == "hard":
        m = (m > 0.5).double()
    if kind == "empty":
        m[:, 0] = 0
    return m


def make_style(gen, n, k, c):
    gamma = 0.5 + torch.rand(n, k, c, generator=gen, dtype=torch.float64)
    beta = torch.randn(n, k, c, generator=gen, dtype=torch.float64)
    return gamma, beta


def upcast(args):
    return [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def check_against_reference(op, args, dtype):
    """Run `op` on the cpu backend and check it against the float64 and same-dtype references."""
    impl = getattr(reference, f"{op}_impl")
    out = getattr(ops, op)(*args, backend="cpu")
    ref64 = impl(*upcast(args))
    ref_same = impl(*args)
    if op == "masked_moments":  # (mean, var)
        outs, ref64s, refs = out, ref64, ref_same
    else:
        outs, ref64s, refs = (out,), (ref64,), (ref_same,)
    for o, r64, rs in zip(outs, ref64s, refs):
        assert o.shape == r64.shape and o.dtype == rs.dtype
        assert torch.isfinite(o).all(), f"{op}: non-finite output"
        err = (o.double() - r64).abs()
        allowed = 2 * (rs.double() - r64).abs().max().item() + ATOL[dtype]
        assert err.max().item() <= allowed, f"{op} {dtype}: max error {err.max().item():.3g} > {allowed:.3g}"
    return out


def expected_format(x):
    return reference.output_memory_format(x)


# --------------------------------------------------------------------------------------------------
# Accuracy on fresh random inputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_op_matches_the_reference(gen, shape, layout, dtype):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    kinds = ("soft", "hard", "empty", "lowres") if x.numel() < 10_000 else ("soft", "lowres")  # keep it quick
    for i, kind in enumerate(kinds):
        masks = make_masks(gen, n, k, h, w, kind)
        check_against_reference("masked_moments", (x, masks, 1e-5), dtype)
        gamma, beta = make_style(gen, n, k, c)
        for stats in ("global", "region"):
            activation = ACTIVATIONS[(i + (stats == "region")) % 3]
            residual = laid_out(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype), layout)
            residual = residual if (i + (stats == "region")) % 2 else None
            y = check_against_reference(
                "region_adain", (x, masks, gamma, beta, stats, 1e-5, activation, residual), dtype
            )
            assert y.is_contiguous(memory_format=expected_format(x))
    mask = make_masks(gen, n, 1, h, w, "lowres")
    styles = [t[:, 0] for t in make_style(gen, n, 2, c) + make_style(gen, n, 2, c)]
    check_against_reference("highway_adain", (x, mask, *styles, 1e-5), dtype)
    for op in ("instance_norm", "layer_norm"):
        for i, activation in enumerate(ACTIVATIONS):
            weight = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64) if i != 1 else None
            bias = torch.randn(c, generator=gen, dtype=torch.float64) if i != 2 else None
            residual = laid_out(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype), layout)
            y = check_against_reference(op, (x, weight, bias, 1e-5, activation, residual if i else None), dtype)
            assert y.is_contiguous(memory_format=expected_format(x))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_complementary_mask_pair(gen, layout, dtype):
    """Masks [m, 1 - m] (highway AdaIN) take the kernels' one-plane path; the result is the same op."""
    x = make_x(gen, 3, 64, 33, 31, dtype, layout)
    m = make_masks(gen, 3, 1, 33, 31, "soft").to(reference.accumulation_dtype(dtype))
    masks = torch.cat([m, 1 - m], dim=1)
    gamma, beta = make_style(gen, 3, 2, 64)
    residual = laid_out(torch.randn(3, 64, 33, 31, generator=gen, dtype=torch.float64).to(dtype), layout)
    for stats, activation, res in (("global", None, None), ("region", "lrelu", residual)):
        check_against_reference("region_adain", (x, masks, gamma, beta, stats, 1e-5, activation, res), dtype)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_residual_in_another_dtype_and_layout(gen, dtype):
    x = make_x(gen, 2, 5, 9, 7, dtype, "channels_last")
    masks = make_masks(gen, 2, 2, 9, 7, "soft")
    gamma, beta = make_style(gen, 2, 2, 5)
    residual = torch.randn(2, 5, 9, 7, generator=gen, dtype=torch.float64)  # float64, NCHW
    check_against_reference("region_adain", (x, masks, gamma, beta, "region", 1e-5, "relu", residual), dtype)
    check_against_reference("layer_norm", (x, None, None, 1e-5, "lrelu", residual.float()), dtype)


# C past one channel block of the channels_last kernels (128 float / 64 double channels) with an odd
# remainder; H * W odd and, for the first, more than one pixel tile (256) split between threads; rows short
# enough for the pipelined NCHW sweep (each row's sums taken while the previous row is written).
WIDE_SHAPES = [(1, 131, 17, 19, 2), (2, 200, 9, 15, 3)]


@pytest.mark.parametrize("shape", WIDE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64, torch.bfloat16), ids=str)
def test_wide_channel_blocks_match_the_reference(gen, shape, layout, dtype):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, "soft")
    m = make_masks(gen, n, 1, h, w, "soft").to(reference.accumulation_dtype(dtype))
    pair = torch.cat([m, 1 - m], dim=1)
    residual = laid_out(torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype), layout)
    check_against_reference("masked_moments", (x, masks, 1e-5), dtype)
    for region_masks in (masks, pair):
        gamma, beta = make_style(gen, n, region_masks.shape[1], c)
        for stats, activation, res in (("global", None, None), ("region", "lrelu", residual)):
            args = (x, region_masks, gamma, beta, stats, 1e-5, activation, res)
            assert check_against_reference("region_adain", args, dtype).is_contiguous(memory_format=expected_format(x))
    weight, bias = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64), torch.randn(c, generator=gen)
    for op in ("instance_norm", "layer_norm"):
        check_against_reference(op, (x, weight, bias, 1e-5, "relu", residual), dtype)


def test_direct_cpu_entry_points_match_the_dispatcher_and_step_aside(gen):
    """lmt_fast._C's entry points (the public ops' way past the dispatcher) give the dispatcher's result bit
    for bit, and decline (None) any call the dispatcher would not hand straight to the CPU kernel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class PassThrough(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    x = make_x(gen, 2, 5, 9, 7, torch.float32, "channels_last")
    masks = make_masks(gen, 2, 2, 9, 7, "soft").float()
    gamma, beta = (t.float() for t in make_style(gen, 2, 2, 5))
    calls = {
        library._REGION_ADAIN: (x, masks, gamma, beta, True, 1e-5, 2, x),
        library._INSTANCE_NORM: (x, gamma[0, 0], None, 1e-5, 1, None),
        library._LAYER_NORM: (x, None, beta[0, 1], 1e-5, 0, x),
        library._MASKED_MOMENTS: (x, masks, 1e-5),
    }
    for op, args in calls.items():
        entry = library._CPU_ENTRY[op]
        assert entry is not None, f"this build of lmt_fast._C has no direct entry for {op}"
        with torch._C._AutoDispatchBelowAutograd():
            want = op(*args)
        got = entry(*args)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g, w) and g.stride() == w.stride(), op
        assert entry(args[0].to("meta"), *args[1:]) is None, op
        with PassThrough():
            assert entry(*args) is None, op
        with torch.autocast("cpu"):
            assert entry(*args) is None, op
    with warnings.catch_warnings():  # jit.trace is deprecated, and it turns the shapes the checks read into tensors
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(lambda t: ops.layer_norm(t, backend="cpu"), (x,), check_trace=False)
    assert "lmt::layer_norm" in str(traced.graph)


def test_one_pixel_maps_in_float64(gen):
    x = make_x(gen, 2, 3, 1, 1, torch.float64)
    masks = make_masks(gen, 2, 2, 1, 1, "soft")
    gamma, beta = make_style(gen, 2, 2, 3)
    for stats in ("global", "region"):
        check_against_reference("region_adain", (x, masks, gamma, beta, stats, 1e-5, None, None), torch.float64)
    check_against_reference("instance_norm", (x, None, None, 1e-5, None, None), torch.float64)


def test_strided_input_and_bool_masks(gen):
    base = make_x(gen, 2, 6, 14, 13, torch.float32)
    x = base[:, ::2, 1::2]  # neither NCHW- nor channels_last-contiguous
    masks = torch.rand(2, 2, 7, 13, generator=gen) > 0.5
    gamma, beta = make_style(gen, 2, 2, 3)
    y = check_against_reference("region_adain", (x, masks, gamma, beta, "region", 1e-5, None, None), torch.float32)
    assert y.is_contiguous()
    check_against_reference("masked_moments", (x, masks, 1e-5), torch.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_empty_batch(gen, layout):
    x = make_x(gen, 0, 4, 5, 3, torch.float32, layout)
    masks = torch.rand(0, 2, 5, 3, generator=gen)
    gamma, beta = torch.ones(0, 2, 4), torch.zeros(0, 2, 4)
    assert ops.region_adain(x, masks, gamma, beta, stats="region", backend="cpu").shape == x.shape
    assert ops.layer_norm(x, backend="cpu").shape == ops.instance_norm(x, backend="cpu").shape == x.shape
    assert ops.masked_moments(x, masks, backend="cpu")[0].shape == (0, 2, 4)


def test_large_rows_and_large_mean(gen):
    """Rows of 128 x 96 pixels (many tiles, many pixel runs) and a mean 100x the std: shifted sums hold."""
    for layout in LAYOUTS:
        x = laid_out((40.0 + 0.01 * torch.randn(2, 8, 128, 96, generator=gen, dtype=torch.float64)).float(), layout)
        masks = make_masks(gen, 2, 2, 128, 96, "soft")
        gamma, beta = make_style(gen, 2, 2, 8)
        check_against_reference("masked_moments", (x, masks, 1e-5), torch.float32)
        check_against_reference("region_adain", (x, masks, gamma, beta, "region", 1e-5, None, None), torch.float32)
        check_against_reference("instance_norm", (x, None, None, 1e-5, None, None), torch.float32)
        check_against_reference("layer_norm", (x, None, None, 1e-5, None, None), torch.float32)


# --------------------------------------------------------------------------------------------------
# Defined results for empty regions; no uninitialised output
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float16), ids=str)
def test_empty_region_is_exactly_zero_and_contributes_nothing(gen, layout, dtype):
    x = make_x(gen, 2, 5, 11, 9, dtype, layout)
    masks = make_masks(gen, 2, 3, 11, 9, "soft")
    masks[:, 1] = 0
    mean, var = ops.masked_moments(x, masks, backend="cpu")
    assert (mean[:, 1] == 0).all() and (var[:, 1] == 0).all()
    gamma, beta = make_style(gen, 2, 3, 5)
    y = ops.region_adain(x, masks, gamma, beta, stats="region", backend="cpu")
    keep = [0, 2]
    y_without = ops.region_adain(x, masks[:, keep], gamma[:, keep], beta[:, keep], stats="region", backend="cpu")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_without, rtol=1e-6, atol=1e-6)


def _poison_heap(like, count=4):
    """Allocate and free NaN-filled blocks the size of the coming outputs, so a kernel that leaves an
    element unwritten would likely return NaN there (best effort: CPU allocations are not cached)."""
    blocks = [torch.full(like.shape, float("nan"), dtype=like.dtype) for _ in range(count)]
    del blocks


@pytest.mark.parametrize("layout", LAYOUTS)
def test_outputs_are_fully_written(gen, layout):
    x = make_x(gen, 3, 64, 33, 31, torch.float32, layout)
    masks = make_masks(gen, 3, 2, 33, 31, "soft")
    gamma, beta = make_style(gen, 3, 2, 64)
    calls = [
        ("region_adain", (x, masks, gamma, beta, "global", 1e-5, None, None)),
        ("region_adain", (x, masks, gamma, beta, "region", 1e-5, "relu", x)),
        ("instance_norm", (x, None, None, 1e-5, None, None)),
        ("layer_norm", (x, None, None, 1e-5, "lrelu", None)),
    ]
    for op, args in calls:
        for _ in range(2):
            _poison_heap(x)
            check_against_reference(op, args, torch.float32)
    for _ in range(2):
        _poison_heap(torch.empty(3, 2, 64))
        check_against_reference("masked_moments", (x, masks, 1e-5), torch.float32)


# --------------------------------------------------------------------------------------------------
# Autograd, torch.library registration, dispatch
# --------------------------------------------------------------------------------------------------


def _grads(fn, inputs):
    inputs = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out = fn(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
    present = [t for t in inputs if t is not None]
    return torch.autograd.grad(loss, present)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_equal_the_reference_gradients(gen, layout):
    n, c, h, w, k = 2, 3, 6, 5, 2
    x = make_x(gen, n, c, h, w, torch.float64, layout)
    masks = make_masks(gen, n, k, 3, 4, "soft")  # resized inside the op: gradients flow through the resize
    gamma, beta = make_style(gen, n, k, c)
    residual = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    weight, bias = gamma[0, 0], beta[0, 1]
    cases = [
        ("masked_moments", lambda b: lambda x, m: ops.masked_moments(x, m, backend=b), [x, masks]),
        ("region_adain global", lambda b: lambda x, m, g, be, r: ops.region_adain(
            x, m, g, be, "global", 1e-5, "lrelu", r, backend=b), [x, masks, gamma, beta, residual]),
        ("region_adain region", lambda b: lambda x, m, g, be: ops.region_adain(
            x, m, g, be, "region", 1e-5, "relu", backend=b), [x, masks, gamma, beta]),
        ("highway_adain", lambda b: lambda x, m, gf, bf: ops.highway_adain(
            x, m, gf, bf, gamma[:, 1], beta[:, 1], backend=b), [x, masks[:, :1], gamma[:, 0], beta[:, 0]]),
        ("instance_norm", lambda b: lambda x, wt, bs, r: ops.instance_norm(
            x, wt, bs, 1e-5, "lrelu", r, backend=b), [x, weight, bias, residual]),
        ("layer_norm", lambda b: lambda x, wt, bs: ops.layer_norm(x, wt, bs, backend=b), [x, weight, bias]),
        # absent optionals before a present residual
        ("instance_norm no affine", lambda b: lambda x, r: ops.instance_norm(
            x, None, None, 1e-5, "relu", r, backend=b), [x, residual]),
        ("layer_norm weight only", lambda b: lambda x, wt, r: ops.layer_norm(
            x, wt, None, 1e-5, None, r, backend=b), [x, weight, residual]),
    ]
    for name, make, inputs in cases:
        got = _grads(make("cpu"), inputs)
        want = _grads(make("reference"), inputs)
        for g, r in zip(got, want):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10, msg=name)


def test_gradients_of_layers_sharing_parameters_and_second_order(gen):
    """Two ops share a weight and one's input is the other's residual: the backward of each op must not
    follow its inputs' history (that would double-count and free the graph), and double backward works."""
    w = torch.randn(3, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(3, generator=gen, dtype=torch.float64, requires_grad=True)
    inp = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64)

    def model(backend):
        x = torch.nn.functional.conv2d(inp, w, padding=1)
        y = ops.instance_norm(x, weight, None, 1e-5, "relu", backend=backend)
        z = torch.nn.functional.conv2d(y, w, padding=1)
        return ops.layer_norm(z, weight, None, 1e-5, None, x, backend=backend).square().sum()

    got, want = [], []
    for backend, out in (("cpu", got), ("reference", want)):
        (gw,) = torch.autograd.grad(model(backend), [w], create_graph=True)
        out += [gw.detach(), *torch.autograd.grad(gw.square().sum(), [w, weight])]
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-9)


def test_gradcheck_through_the_kernels(gen):
    """Numerical derivatives of the C++ forward agree with the backward (which recomputes the spec)."""
    x = make_x(gen, 1, 2, 3, 4, torch.float64).requires_grad_()
    masks = make_masks(gen, 1, 2, 3, 4, "soft").requires_grad_()
    gamma, beta = (t.requires_grad_() for t in make_style(gen, 1, 2, 2))
    assert torch.autograd.gradcheck(
        lambda *a: torch.ops.lmt.region_adain(*a, True, 1e-5, 2, None), (x, masks, gamma, beta)
    )
    assert torch.autograd.gradcheck(lambda *a: torch.ops.lmt.masked_moments(*a, 1e-5), (x, masks))
    weight = torch.rand(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: torch.ops.lmt.layer_norm(x, w, None, 1e-5, 1, None), (x, weight))


def _opcheck_samples():
    g = torch.Generator().manual_seed(7)
    x = make_x(g, 2, 3, 5, 4, torch.float32).requires_grad_()
    x_cl = make_x(g, 2, 3, 5, 4, torch.float32, "channels_last").requires_grad_()
    masks = torch.rand(2, 2, 5, 4, generator=g, requires_grad=True)
    gamma, beta = (t.float().requires_grad_() for t in make_style(g, 2, 2, 3))
    residual = torch.randn(2, 3, 5, 4, generator=g, requires_grad=True)
    weight, bias = torch.rand(3, requires_grad=True), torch.randn(3, requires_grad=True)
    return {
        "masked_moments": (x, masks, 1e-5),
        "region_adain": (x, masks, gamma, beta, True, 1e-5, 2, residual),
        "region_adain_channels_last": (x_cl, masks, gamma, beta, False, 1e-5, 1, None),
        "instance_norm": (x_cl, weight, bias, 1e-5, 0, residual),
        "layer_norm": (x, None, bias, 1e-5, 2, None),
    }


@pytest.mark.parametrize("case", list(_opcheck_samples()))
def test_opcheck(case):
    op = getattr(torch.ops.lmt, case.replace("_channels_last", ""))
    result = torch.library.opcheck(op, _opcheck_samples()[case])
    assert all(v == "SUCCESS" for v in result.values()), result


def test_auto_resolves_to_cpu_and_runs_the_kernel(gen):
    x = make_x(gen, 1, 4, 6, 5, torch.float32)
    masks = make_masks(gen, 1, 2, 6, 5, "soft")
    gamma, beta = make_style(gen, 1, 2, 4)
    for op in ("masked_moments", "region_adain", "highway_adain", "instance_norm", "layer_norm"):
        for dtype in DTYPES:
            assert ops.resolve_backend("auto", "cpu", op=op, dtype=dtype) == "cpu"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        y = ops.region_adain(x, masks, gamma, beta, backend="auto")
    assert any(e.name == "lmt::region_adain" for e in prof.events())
    torch.testing.assert_close(y, ops.region_adain(x, masks, gamma, beta, backend="reference"))


def test_schema_checks_name_the_problem():
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(RuntimeError, match=r"masks must have shape \(N, K, H, W\) with x's N, H, W"):
        torch.ops.lmt.region_adain(x, torch.rand(1, 1, 3, 4), torch.ones(1, 1, 2), torch.zeros(1, 1, 2),
                                   False, 1e-5, 0, None)
    with pytest.raises(RuntimeError, match="activation must be 0"):
        torch.ops.lmt.instance_norm(x, None, None, 1e-5, 3, None)
    with pytest.raises(RuntimeError, match="x must be float32, float64, bfloat16 or float16"):
        torch.ops.lmt.layer_norm(x.to(torch.int32), None, None, 1e-5, 0, None)


def test_library_table_matches_the_reference_signatures():
    import inspect

    for op, impl in library.IMPLS.items():
        spec = inspect.signature(reference.IMPLS[op])
        assert list(inspect.signature(impl).parameters) == list(spec.parameters), op


# --------------------------------------------------------------------------------------------------
# The whole model
# --------------------------------------------------------------------------------------------------


def test_tiny_lomit_generator_matches_the_reference_backend():
    from torch.utils._python_dispatch import TorchDispatchMode

    from lmt_fast.models import LOMITConfig, LOMITGenerator

    class RecordOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func.name()))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    g = LOMITGenerator(LOMITConfig.tiny()).eval()
    x_in, x_ex = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        g.set_backend("reference")
        want = g(x_in, x_ex)
        g.set_backend("cpu")
        with RecordOps() as recorded:
            got = g(x_in, x_ex)
    assert {"lmt::region_adain", "lmt::instance_norm", "lmt::layer_norm"} <= recorded.names
    torch.testing.assert_close(got.image, want.image, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.input_mask, want.input_mask, rtol=0, atol=1e-5)
