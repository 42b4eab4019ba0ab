"""The Triton backend (lmt_fast.ops.triton) against the reference.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1). The interpreter is slow, so shapes are small and the tuning caps are shrunk to push
them down every path: one-pass, looped and split-HW. With LMT_FAST_TEST_GPU=1 on a CUDA machine the same
tests run natively on the GPU, plus the `gpu` class at realistic shapes.

Inputs are fresh random tensors per test (seeded from the test id), with a non-zero mean
(-2.3 + 0.5 * randn) so that a variance formed as E[x^2] - E[x]^2 would show. Every output is written
into a NaN-poisoned buffer through the impls' `_out` hook and must come back fully overwritten.
"""
import math
import os
import zlib
from typing import Optional

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install '.[triton]')")

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
if not _INTERPRET and not torch.cuda.is_available():
    pytest.skip("Triton kernels need a CUDA GPU or TRITON_INTERPRET=1 (set before triton is imported)",
                allow_module_level=True)

from lmt_fast import ops  # noqa: E402
from lmt_fast.ops import dispatch  # noqa: E402
from lmt_fast.ops import reference as R  # noqa: E402
from lmt_fast.ops import triton as T  # noqa: E402
from lmt_fast.ops.triton import _heuristics as heur  # noqa: E402
from lmt_fast.ops.triton.ops import register_reference_autograd  # noqa: E402

DEVICE = torch.device("cpu" if _INTERPRET else "cuda")
PATHS = ["one_pass", "looped", "split"]
LAYOUTS = ["nchw", "channels_last"]
# Small chunks make 7x13 and 33x31 maps take several loop iterations and split ranges; a small SM
# count keeps the number of split ranges (interpreted programs) low.
PATH_TUNING = dict(chunk=64, resident_cap=16384, sm_count=4)
TOL32 = dict(rtol=2e-5, atol=2e-5)
# Extra absolute error allowed in half precision: about one ulp at |y| ~ 1 (a rounding flip).
HALF_ATOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: different for every parametrization, reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------------------------------
# Inputs and checks
# --------------------------------------------------------------------------------------------------


def make_x(gen, n, c, h, w, dtype=torch.float32, layout="nchw"):
    x = (-2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(DEVICE)


def make_masks(gen, n, k, h, w, kind="soft", empty=()):
    u = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
    m = (u > 0.5).double() if kind == "hard" else u
    for j in empty:  # an all-zero region
        m[:, j] = 0
    return m.float().to(DEVICE)


def make_style(gen, n, k, c):
    gamma = 0.5 + torch.rand(n, k, c, generator=gen, dtype=torch.float64)
    beta = torch.randn(n, k, c, generator=gen, dtype=torch.float64)
    return gamma.float().to(DEVICE), beta.float().to(DEVICE)


def make_like(gen, x, layout=None):
    t = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t.to(DEVICE)


def poisoned_like(x):
    fmt = R.output_memory_format(x)
    return torch.full_like(x, float("nan"), memory_format=fmt)


def as64(args):
    return [a.double() if isinstance(a, torch.Tensor) else a for a in args]


def run_poisoned(op, args):
    """Run the Triton impl into NaN-filled buffers; check every element was written; return them."""
    impl = T.IMPLS[op]
    if op == "masked_moments":
        x, masks = args[:2]
        shape = (x.shape[0], masks.shape[1], x.shape[1])
        out = tuple(torch.full(shape, float("nan"), device=x.device) for _ in range(2))
        got = impl(*args, _out=out)
        assert got[0] is out[0] and got[1] is out[1]
        assert all(not t.isnan().any() for t in out), "masked_moments left elements unwritten"
        return out
    out = poisoned_like(args[0])
    got = impl(*args, _out=out)
    assert got is out
    assert not out.isnan().any(), f"{op} left {int(out.isnan().sum())} of {out.numel()} elements unwritten"
    return out


def check_float32(op, args, out_of_op=True):
    """Poisoned run and (out_of_op) a plain run, output allocated by the op, against float64."""
    expected = R.IMPLS[op](*as64(args))
    got = run_poisoned(op, args)
    plain = T.IMPLS[op](*args) if out_of_op else got
    for result in (got, plain) if out_of_op else (got,):
        if op == "masked_moments":
            for g, e in zip(result, expected):
                assert g.dtype == torch.float32 and g.shape == e.shape
                torch.testing.assert_close(g.double(), e, **TOL32)
        else:
            x = args[0]
            assert result.dtype == x.dtype and result.shape == x.shape
            torch.testing.assert_close(result.double(), expected, **TOL32)
    if op != "masked_moments" and out_of_op:
        fmt = R.output_memory_format(args[0])
        assert plain.is_contiguous(memory_format=fmt), f"output layout {plain.stride()} is not {fmt}"
    return got


def check_half(op, args):
    """Error vs float64 <= 2 x the reference's own error in the same dtype + about one ulp."""
    x = args[0]
    exact = R.IMPLS[op](*as64(args))
    same_dtype = R.IMPLS[op](*args)
    got = run_poisoned(op, args)
    if op == "masked_moments":  # statistics are float32 for every input dtype
        for g, s, e in zip(got, same_dtype, exact):
            assert g.dtype == torch.float32
            err, ref_err = (g.double() - e).abs().max().item(), (s.double() - e).abs().max().item()
            assert err <= 2 * ref_err + 1e-5, (err, ref_err)
        return
    assert got.dtype == x.dtype
    err = (got.double() - exact).abs().max().item()
    ref_err = (same_dtype.double() - exact).abs().max().item()
    atol = HALF_ATOL[x.dtype]
    if _INTERPRET and x.dtype == torch.bfloat16:
        # Triton's interpreter truncates fp32 -> bf16 (GPUs round to nearest even): allow one ulp.
        atol = max(atol, 2.0 ** (math.floor(math.log2(exact.abs().max().item())) - 7))
    assert err <= 2 * ref_err + atol, (err, ref_err)


# --------------------------------------------------------------------------------------------------
# Every op down every path, both layouts (float32)
# --------------------------------------------------------------------------------------------------

# (N, C, H, W, K, mask kind, mask size or None, empty regions, stats, activation, residual)
REGION_CASES = [
    (1, 5, 7, 13, 1, "hard", None, (), "global", None, False),
    (3, 5, 7, 13, 3, "soft", (4, 6), (), "region", "lrelu", True),
    (1, 1, 33, 31, 2, "hard", None, (1,), "region", "relu", True),
    (1, 16, 9, 11, 2, "soft", (16, 15), (0,), "global", "relu", False),
]


@pytest.mark.parametrize("case", range(len(REGION_CASES)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", PATHS)
def test_region_adain(gen, path, layout, case):
    n, c, h, w, k, kind, mask_size, empty, stats, activation, with_residual = REGION_CASES[case]
    x = make_x(gen, n, c, h, w, layout=layout)
    masks = make_masks(gen, n, k, *(mask_size or (h, w)), kind, empty)
    gamma, beta = make_style(gen, n, k, c)
    residual = make_like(gen, x) if with_residual else None
    with T.tuning(force_path=path, **PATH_TUNING):
        check_float32("region_adain", (x, masks, gamma, beta, stats, 1e-5, activation, residual),
                      out_of_op=path == "one_pass")


MOMENT_CASES = [
    (3, 5, 7, 13, 3, "soft", (5, 4), (1,)),
    (1, 16, 9, 11, 1, "hard", None, ()),
    (3, 1, 33, 31, 2, "soft", None, (0, 1)),
]


@pytest.mark.parametrize("case", range(len(MOMENT_CASES)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", PATHS)
def test_masked_moments(gen, path, layout, case):
    n, c, h, w, k, kind, mask_size, empty = MOMENT_CASES[case]
    x = make_x(gen, n, c, h, w, layout=layout)
    masks = make_masks(gen, n, k, *(mask_size or (h, w)), kind, empty)
    with T.tuning(force_path=path, **PATH_TUNING):
        mean, var = check_float32("masked_moments", (x, masks, 1e-5), out_of_op=path == "one_pass")
        if empty:  # documented: an empty region has mean = var = 0 exactly
            assert (mean[:, list(empty)] == 0).all() and (var[:, list(empty)] == 0).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", PATHS)
def test_highway_adain(gen, path, layout):
    n, c, h, w = 3, 5, 7, 13
    x = make_x(gen, n, c, h, w, layout=layout)
    mask = make_masks(gen, n, 1, 4, 7)
    (gamma_f, gamma_b), (beta_f, beta_b) = (t.unbind(1) for t in make_style(gen, n, 2, c))
    with T.tuning(force_path=path, **PATH_TUNING):
        check_float32("highway_adain", (x, mask, gamma_f, beta_f, gamma_b, beta_b, 1e-5),
                      out_of_op=path == "one_pass")


# (N, C, H, W, weight, bias, activation, residual layout or None)
NORM_CASES = [
    (3, 5, 7, 13, True, True, "lrelu", "nchw"),
    (1, 16, 9, 11, True, False, "relu", "channels_last"),
    (1, 1, 33, 31, False, False, None, None),
]


@pytest.mark.parametrize("case", range(len(NORM_CASES)))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("op", ["instance_norm", "layer_norm"])
def test_norms(gen, op, path, layout, case):
    n, c, h, w, with_weight, with_bias, activation, residual_layout = NORM_CASES[case]
    x = make_x(gen, n, c, h, w, layout=layout)
    weight = (0.5 + torch.rand(c, generator=gen)).to(DEVICE) if with_weight else None
    bias = torch.randn(c, generator=gen).to(DEVICE) if with_bias else None
    residual = make_like(gen, x, residual_layout) if residual_layout else None
    tune = dict(PATH_TUNING)
    if op == "layer_norm" and path == "one_pass":
        tune["resident_cap"] = 65536  # a whole sample on chip: 16 x 1024 for 33x31
    with T.tuning(force_path=path, **tune):
        check_float32(op, (x, weight, bias, 1e-5, activation, residual), out_of_op=path == "one_pass")


# --------------------------------------------------------------------------------------------------
# Half precision, odd layouts, edge cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["one_pass", "split"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(gen, dtype, path):
    n, c, h, w, k = 3, 5, 7, 13, 2
    x = make_x(gen, n, c, h, w, dtype, layout="channels_last" if path == "split" else "nchw")
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    weight = (0.5 + torch.rand(c, generator=gen)).to(DEVICE)
    residual = make_like(gen, x)
    tune = dict(PATH_TUNING, chunk=256, resident_cap=65536)
    with T.tuning(force_path=path, **tune):
        check_half("masked_moments", (x, masks, 1e-5))
        check_half("region_adain", (x, masks, gamma.to(dtype), beta, "region", 1e-5, "lrelu", residual))
        check_half("region_adain", (x, masks, gamma, beta, "global", 1e-5, None, None))
        check_half("highway_adain", (x, masks[:, :1], gamma[:, 0], beta[:, 0], gamma[:, 1], beta[:, 1], 1e-5))
        check_half("instance_norm", (x, weight, None, 1e-5, "relu", residual))
        check_half("layer_norm", (x, weight, None, 1e-5, None, None))


def test_inputs_that_need_a_copy_or_another_layout(gen):
    """A transposed x (H and W not walkable as one axis) and a residual in the other layout."""
    n, c, h, w = 2, 3, 9, 5
    x = make_x(gen, n, c, w, h).transpose(2, 3)  # (n, c, h, w) with stride_h = 1
    masks = make_masks(gen, n, 2, h, w)
    gamma, beta = make_style(gen, n, 2, c)
    residual = make_like(gen, x, "channels_last")
    check_float32("region_adain", (x, masks, gamma, beta, "region", 1e-5, None, residual))
    x_cl = make_x(gen, n, c, h, w, layout="channels_last")
    check_float32("instance_norm", (x_cl, None, None, 1e-5, None, make_like(gen, x_cl)))


def test_mask_dtypes_and_views(gen):
    """bool / fp16 / fp64 masks and a sliced (non-contiguous) mask view give the fp32 masks' result."""
    x = make_x(gen, 2, 3, 7, 5)
    hard = make_masks(gen, 2, 3, 7, 5, "hard")
    for got, want in zip(T.masked_moments(x, hard.bool(), 1e-5), T.masked_moments(x, hard, 1e-5)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for masks in (hard.half(), hard.double(), hard[:, 1:]):
        want = T.masked_moments(x, masks.float().contiguous(), 1e-5)
        torch.testing.assert_close(T.masked_moments(x, masks, 1e-5), want, rtol=0, atol=0)


def test_empty_batch(gen):
    x = make_x(gen, 2, 3, 7, 5)
    hard = make_masks(gen, 2, 2, 7, 5, "hard")
    empty = x[:0]
    y = T.region_adain(empty, hard[:0], *make_style(gen, 0, 2, 3), "region", 1e-5, None, None)
    assert y.shape == empty.shape
    mean, var = T.masked_moments(empty, hard[:0], 1e-5)
    assert mean.shape == var.shape == (0, 2, 3)


def test_large_mean_features_keep_their_variance(gen):
    """Features with mean 1000 and std 0.01: E[x^2] - E[x]^2 in fp32 would give garbage."""
    x = (1000.0 + 0.01 * torch.randn(2, 3, 17, 19, generator=gen, dtype=torch.float64))
    masks = torch.rand(2, 2, 17, 19, generator=gen, dtype=torch.float64)
    exp_mean, exp_var = R.masked_moments_impl(x, masks, 1e-5)
    for path in PATHS:
        with T.tuning(force_path=path, **PATH_TUNING):
            mean, var = T.masked_moments(x.float().to(DEVICE), masks.float().to(DEVICE), 1e-5)
        torch.testing.assert_close(var.double().cpu(), exp_var, rtol=2e-2, atol=1e-8)
        torch.testing.assert_close(mean.double().cpu(), exp_mean, rtol=1e-6, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Path choice (no forcing): the heuristics, and each chosen path end to end
# --------------------------------------------------------------------------------------------------


def test_plan_heuristics():
    cpu = torch.device("cpu")
    big = dict(sm_count=132)
    with T.tuning(**big):
        assert heur.plan_rows(8, 256, 64 * 64, False, cpu).path == "one_pass"
        plan = heur.plan_rows(8, 256, 256 * 256, False, cpu)  # 64k-pixel rows: too long to hold
        assert plan.path == "looped" and plan.block_p == T.current_tuning().chunk
        plan = heur.plan_rows(1, 64, 256 * 256, False, cpu)  # 64 rows cannot fill 132 SMs
        assert plan.path == "split" and plan.splits > 1 and plan.programs(1, 64) >= 2 * 132
        assert plan.split_len % plan.block_p == 0 and plan.splits * plan.split_len >= 256 * 256
        cl = heur.plan_rows(8, 256, 32 * 32, True, cpu)
        assert cl.block_c >= 8  # channels_last tiles span at least a sector of channels
        assert heur.plan_samples(1, 256, 32 * 32, False, cpu).path == "split"
        assert heur.plan_samples(1024, 4, 8 * 8, False, cpu).path == "one_pass"
    with T.tuning(sm_count=4):  # a small GPU: 64 rows are plenty
        assert heur.plan_rows(1, 64, 256 * 256, False, cpu).path == "looped"
    with T.tuning(force_path="one_pass", resident_cap=64):
        with pytest.raises(ValueError, match="does not fit"):
            heur.plan_rows(1, 3, 33 * 31, False, cpu)
    with pytest.raises(ValueError, match="power of two"):
        T.Tuning(chunk=100)


# (tuning, N, C, H, W, layout, expected path)
NATURAL_CASES = [
    (dict(sm_count=2), 3, 5, 7, 13, "nchw", "one_pass"),
    (dict(sm_count=2, resident_cap=64, chunk=32), 1, 5, 7, 13, "nchw", "looped"),
    (dict(sm_count=4, resident_cap=64, chunk=64, split_min_row=64), 1, 3, 33, 31, "channels_last", "split"),
]


@pytest.mark.parametrize("case", range(len(NATURAL_CASES)))
def test_heuristic_paths_end_to_end(gen, case):
    tune, n, c, h, w, layout, expected = NATURAL_CASES[case]
    x = make_x(gen, n, c, h, w, layout=layout)
    masks = make_masks(gen, n, 2, h, w, empty=(1,))
    gamma, beta = make_style(gen, n, 2, c)
    with T.tuning(**tune):
        assert heur.plan_rows(n, c, h * w, layout == "channels_last", x.device).path == expected
        check_float32("region_adain", (x, masks, gamma, beta, "region", 1e-5, "lrelu", make_like(gen, x)),
                      out_of_op=False)
        check_float32("masked_moments", (x, masks, 1e-5), out_of_op=False)


# --------------------------------------------------------------------------------------------------
# Gradients (recomputed through the reference) and registration
# --------------------------------------------------------------------------------------------------

GRAD_CASES = {
    "masked_moments": lambda g, x, m, gm, bt: (x, m, 1e-5),
    "region_adain": lambda g, x, m, gm, bt: (x, m, gm, bt, "region", 1e-5, "lrelu", make_like(g, x)),
    "highway_adain": lambda g, x, m, gm, bt: (x, m[:, :1], gm[:, 0], bt[:, 0], gm[:, 1], bt[:, 1], 1e-5),
    "instance_norm": lambda g, x, m, gm, bt: (x, gm[0, 0], bt[0, 0], 1e-5, "relu", make_like(g, x)),
    "layer_norm": lambda g, x, m, gm, bt: (x, gm[0, 0], bt[0, 0], 1e-5, None, None),
}


@pytest.mark.parametrize("op", sorted(GRAD_CASES))
def test_gradients_match_reference(gen, op):
    n, c, h, w = 2, 3, 5, 6
    args = GRAD_CASES[op](gen, make_x(gen, n, c, h, w), make_masks(gen, n, 2, 4, 3),
                          *make_style(gen, n, 2, c))
    args = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    leaves = [a for a in args if isinstance(a, torch.Tensor)]
    ref_args = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
    ref_leaves = [a for a in ref_args if isinstance(a, torch.Tensor)]

    out, ref = T.IMPLS[op](*args), R.IMPLS[op](*ref_args)
    outs, refs = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    cotangents = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(DEVICE) for o in outs]
    grads = torch.autograd.grad(outs, leaves, cotangents)
    ref_grads = torch.autograd.grad(refs, ref_leaves, cotangents)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_backend_registration():
    backend = dispatch._REGISTRY["triton"]
    assert backend.devices == frozenset({"cuda"}) and backend.differentiable
    assert backend.dtypes == frozenset({torch.float32, torch.float16, torch.bfloat16})
    assert set(backend.impls) == set(dispatch.OPS)
    with pytest.raises(TypeError, match="float64"):
        T.instance_norm(torch.zeros(1, 2, 3, 3, dtype=torch.float64, device=DEVICE))
    if torch.cuda.is_available():
        assert "triton" in ops.available_backends("cuda")


def _opcheck_args(gen):
    x = make_x(gen, 2, 3, 5, 4, layout="channels_last")
    masks = make_masks(gen, 2, 2, 3, 3)
    gamma, beta = make_style(gen, 2, 2, 3)
    return {
        "masked_moments": (x, masks, 1e-5),
        "region_adain": (x, masks, gamma, beta, "region", 1e-5, "lrelu", make_like(gen, x)),
        "highway_adain": (x, masks[:, :1], gamma[:, 0], beta[:, 0], gamma[:, 1], beta[:, 1], 1e-5),
        "instance_norm": (x, gamma[0, 0], None, 1e-5, None, None),
        "layer_norm": (x, None, beta[0, 0], 1e-5, "relu", make_like(gen, x)),
    }


def test_opcheck(gen):
    # The interpreter has no traceable kernels, so the AOT-dispatch checks run on a GPU only.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if not _INTERPRET:
        utils += ("test_aot_dispatch_dynamic",)
    for name, args in _opcheck_args(gen).items():
        args = tuple(a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
        result = torch.library.opcheck(getattr(torch.ops.lmt_triton, name), args, test_utils=utils)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


def test_fake_kernel_keeps_channels_last(gen):
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = make_x(gen, 2, 3, 5, 4, layout="channels_last")
    masks = make_masks(gen, 2, 2, 3, 3)
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        y = torch.ops.lmt_triton.instance_norm(fake, None, None, 1e-5, None, None)
        assert y.shape == x.shape and y.stride() == x.stride()
        mean, var = torch.ops.lmt_triton.masked_moments(fake, mode.from_tensor(masks), 1e-5)
        assert mean.shape == var.shape == (2, 2, 3)


def test_reference_backward_traces_under_aot_autograd():
    """The backward helper (vjp of the reference) under AOTAutograd, on a CPU stand-in op: the
    interpreter cannot be captured, so the real ops are compiled with Inductor in the GPU class."""
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    weight = torch.rand(3, requires_grad=True)

    def f(x, weight):
        return _probe_instance_norm(x, weight, None, 1e-5, "relu", x * 2)

    torch.compile(f, backend="aot_eager", fullgraph=True)(x, weight).square().sum().backward()
    got = (x.grad, weight.grad)
    x.grad = weight.grad = None
    R.instance_norm_impl(x, weight, None, 1e-5, "relu", x * 2).square().sum().backward()
    torch.testing.assert_close(got, (x.grad, weight.grad), rtol=1e-6, atol=1e-6)


@torch.library.custom_op("lmt_triton_test::instance_norm", mutates_args=())
def _probe_instance_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                         eps: float, activation: Optional[str], residual: Optional[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return R.instance_norm_impl(x, weight, bias, eps, activation, residual)


_probe_instance_norm.register_fake(lambda x, *rest: torch.empty_like(x))
register_reference_autograd(_probe_instance_norm, R.instance_norm_impl)


def test_torch_compile_has_no_graph_break(gen):
    x = make_x(gen, 2, 3, 7, 5)
    masks = make_masks(gen, 2, 2, 7, 5)
    gamma, beta = make_style(gen, 2, 2, 3)

    def f(x, masks, gamma, beta):
        y = T.region_adain(x, masks, gamma, beta, "region", 1e-5, "relu", None)
        return T.instance_norm(y * 2, None, None, 1e-5, None, None) + 1

    backend = "eager" if _INTERPRET else "inductor"  # the interpreter cannot be captured by AOT
    compiled = torch.compile(f, backend=backend, fullgraph=True)
    torch.testing.assert_close(compiled(x, masks, gamma, beta), f(x, masks, gamma, beta), **TOL32)


@pytest.mark.skipif(not _INTERPRET, reason="on a GPU every launch compiles the kernels anyway")
def test_kernels_compile_natively_for_sm90():
    """The interpreter compiles nothing: build each launcher variant to a cubin (no GPU needed)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run([sys.executable, "-m", "lmt_fast.ops.triton.aot", "--capability", "90"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    compiled = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    kernels = {line.split()[1].split("[")[0] for line in compiled}
    assert kernels == {"normalize_rows_kernel", "normalize_apply_kernel", "moments_kernel",
                       "combine_partials_kernel"}, done.stdout


@pytest.mark.skipif(not _INTERPRET, reason="the dry run needs the interpreter (on a GPU, run the benchmark)")
def test_benchmark_dry_run_writes_json(tmp_path):
    """benchmarks/bench_ops_gpu.py --dry-run: tiny shapes through every code path of the script."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_ops_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_ops_gpu", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--dry-run", "--out-dir", str(tmp_path), "--ops", "highway_adain",
            "--backends", "triton", "reference", "eager", "compiled"]
    path = bench.main(argv)
    doc = json.loads(path.read_text())
    assert path.name.startswith("ops_gpu_cpu-interpreter-dryrun_") and doc["dry_run"]
    assert {"torch", "triton", "cuda"} <= set(doc["versions"]) and doc["device"]["name"]
    ops_run = [r for r in doc["results"] if r["kind"] == "op"]
    assert {r["backend"] for r in ops_run} == {"triton", "reference", "eager", "compiled"}
    assert all(r["status"] == "ok" for r in ops_run), [r["status"] for r in ops_run]
    assert all(r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in ops_run)
    assert all(r["max_abs_err_vs_reference"] < 0.1 for r in ops_run if r["backend"] == "triton")  # bf16: ulps
    assert any(r["kind"] == "copy" and r["gbps"] > 0 for r in doc["results"])
    assert {row["op"] for row in doc["summary"]} == {"highway_adain"}
    # a second run of the same day merges into the file instead of replacing it
    bench.main(argv[:3] + ["--ops", "layer_norm", "--backends", "triton"])
    merged = json.loads(path.read_text())
    assert {r["op"] for r in merged["results"]} == {"copy", "highway_adain", "layer_norm"}


# --------------------------------------------------------------------------------------------------
# GPU: realistic shapes, native kernels, Inductor
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.skipif(_INTERPRET, reason="TRITON_INTERPRET=1: run with LMT_FAST_TEST_GPU=1 for native kernels")
class TestGPU:
    shape = (8, 256, 64, 64)

    def _inputs(self, gen, dtype, layout):
        n, c, h, w = self.shape
        x = make_x(gen, n, c, h, w, dtype, layout)
        masks = make_masks(gen, n, 2, h // 2, w // 2)
        gamma, beta = make_style(gen, n, 2, c)
        return x, masks, gamma, beta

    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
    def test_ops_match_reference(self, gen, dtype, layout):
        x, masks, gamma, beta = self._inputs(gen, dtype, layout)
        residual = make_like(gen, x)
        check = check_float32 if dtype == torch.float32 else check_half
        check("masked_moments", (x, masks, 1e-5))
        check("region_adain", (x, masks, gamma, beta, "region", 1e-5, "lrelu", residual))
        check("region_adain", (x, masks, gamma, beta, "global", 1e-5, None, None))
        check("highway_adain", (x, masks[:, :1], gamma[:, 0], beta[:, 0], gamma[:, 1], beta[:, 1], 1e-5))
        check("instance_norm", (x, gamma[0, 0], beta[0, 0], 1e-5, "relu", residual))
        check("layer_norm", (x, gamma[0, 0], beta[0, 0], 1e-5, None, residual))

    @pytest.mark.parametrize("path", PATHS)
    def test_every_path_at_size(self, gen, path):
        x, masks, gamma, beta = self._inputs(gen, torch.float32, "nchw")
        with T.tuning(force_path=path):
            check_float32("region_adain", (x, masks, gamma, beta, "region", 1e-5, None, None))
            check_float32("instance_norm", (x, None, None, 1e-5, "relu", None))
            if path != "one_pass":  # a 256 x 64 x 64 sample does not fit one program
                check_float32("layer_norm", (x, None, None, 1e-5, None, None))

    def test_dispatch_picks_triton(self, gen):
        x, masks, gamma, beta = self._inputs(gen, torch.float16, "nchw")
        assert dispatch.resolve_backend("triton", x.device, op="region_adain", dtype=x.dtype) == "triton"
        y = ops.region_adain(x, masks, gamma, beta, stats="region", backend="triton")
        assert y.dtype == torch.float16

    def test_inductor_fullgraph(self, gen):
        x, masks, gamma, beta = self._inputs(gen, torch.bfloat16, "channels_last")

        def f(x, masks, gamma, beta):
            y = T.highway_adain(x, masks[:, :1], gamma[:, 0], beta[:, 0], gamma[:, 1], beta[:, 1], 1e-5)
            return T.layer_norm(y, None, None, 1e-5, "relu", x) * 0.5

        compiled = torch.compile(f, fullgraph=True)
        torch.testing.assert_close(compiled(x, masks, gamma, beta), f(x, masks, gamma, beta),
                                   rtol=1e-2, atol=1e-2)  # same kernels; Inductor may fuse the * 0.5

    def test_inductor_backward(self, gen):
        x, masks, gamma, beta = self._inputs(gen, torch.float32, "nchw")
        xg = x.clone().requires_grad_()
        compiled = torch.compile(lambda x: T.instance_norm(x, None, None, 1e-5, "lrelu", None), fullgraph=True)
        compiled(xg).square().sum().backward()
        xr = x.clone().requires_grad_()
        R.instance_norm_impl(xr, None, None, 1e-5, "lrelu", None).square().sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad, rtol=1e-4, atol=1e-4)
