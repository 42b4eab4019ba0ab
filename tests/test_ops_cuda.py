"""The "cuda" op backend (csrc/cuda through torch.ops.lmt) against the spec, on a GPU.

Skipped with a reason where there is no CUDA device or the extension was built without CUDA kernels.
Run on a GPU machine after building the extension there:

    pip install --no-deps --no-build-isolation -e .
    LMT_FAST_TEST_GPU=1 python -m pytest tests/test_ops_cuda.py -q

Accuracy rule (as flash-attention's tests): the kernel's max error against the float64 reference is at
most twice the reference's own error when run in the input's dtype, plus a small atol scaled to the
output's magnitude. Inputs have a non-zero mean (-2.3 + 0.5 * randn) so that E[x^2] - E[x]^2 would show.
Every kernel call runs right after the CUDA caching allocator's free memory was filled with NaN, so an
output element or workspace entry the kernels fail to write shows up as NaN. Both pipelines are forced
through LMT_FAST_CUDA_FORCE_PATH (one pass where it applies, split otherwise).
"""
from __future__ import annotations

import zlib

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)", allow_module_level=True)

from lmt_fast import ops  # noqa: E402
from lmt_fast.ops import backends, reference  # noqa: E402
from spec_tolerance import MOMENTS_REL_ATOL, REL_ATOL, assert_close_to_spec, run_references  # noqa: E402

if "cuda" not in ops.available_backends("cuda"):
    pytest.skip(f"the 'cuda' op backend is not registered: {backends.unavailable.get('cuda', 'unknown reason')}",
                allow_module_level=True)

DEVICE = "cuda"
BACKEND = "cuda"
FORCE_PATH_ENV = "LMT_FAST_CUDA_FORCE_PATH"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
PATHS = ["auto", "onepass", "split"]
LAYOUTS = ["nchw", "nhwc"]

# (N, C, H, W, K): odd and even sizes, C in {1, 5, 64, 256}, K in {1, 2, 3}; vector-width rows
# (H*W or C a multiple of 8) and scalar ones.
SHAPES = [
    (1, 5, 13, 17, 2),
    (3, 1, 9, 11, 1),
    (3, 64, 16, 16, 3),
    (1, 256, 8, 8, 2),
    (3, 5, 33, 31, 3),
    (1, 64, 32, 40, 1),
]
# Row lengths at the one-pass configuration boundaries (1024, 4096, 8192, 16384 elements), vector and scalar.
ROW_SHAPES = [(2, 3, h, w, 2) for h, w in
              [(32, 32), (25, 41), (64, 64), (17, 241), (64, 128), (3, 2731), (128, 128), (129, 127), (145, 113)]]
LARGE_SHAPES = [(1, 3, 256, 256, 2), (1, 2, 512, 512, 2)]


# --------------------------------------------------------------------------------------------------
# Inputs, poisoning, comparison
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def gen(request):
    """A CPU generator seeded from the test id: different for every parametrization, reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv(FORCE_PATH_ENV, request.param)
    return request.param


def laid_out(t, layout):
    return t.to(memory_format=torch.channels_last) if layout == "nhwc" else t.contiguous()


def make_x(gen, n, c, h, w, dtype, layout="nchw"):
    x = (-2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).to(dtype)
    return laid_out(x.to(DEVICE), layout)


def make_masks(gen, n, k, h, w, kind):
    """hard: 0/1; soft: uniform [0, 1); empty: hard, with the last region all zero."""
    u = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
    masks = u if kind == "soft" else (u > 0.5).double()
    if kind == "empty":
        masks[:, -1] = 0
    return masks.float().to(DEVICE)


def make_style(gen, n, k, c):
    gamma = 0.5 + torch.rand(n, k, c, generator=gen, dtype=torch.float64)
    beta = torch.randn(n, k, c, generator=gen, dtype=torch.float64)
    return gamma.float().to(DEVICE), beta.float().to(DEVICE)


def make_affine(gen, c):
    weight = 0.5 + torch.rand(c, generator=gen, dtype=torch.float64)
    bias = torch.randn(c, generator=gen, dtype=torch.float64)
    return weight.float().to(DEVICE), bias.float().to(DEVICE)


def poison_allocator():
    """Fill free memory of the CUDA caching allocator with NaN (large and small pools)."""
    sizes = [64 << 20, 16 << 20, 4 << 20] + [256 << 10] * 16 + [16 << 10] * 64 + [1 << 10] * 64 + [128] * 64
    blocks = [torch.full((n // 4,), float("nan"), device=DEVICE) for n in sizes]
    del blocks


def run_cuda(op, *args, **kwargs):
    """One call of the public op on the cuda backend, into poisoned memory."""
    poison_allocator()
    return getattr(ops, op)(*args, backend=BACKEND, **kwargs)


def assert_output_like_x(out, x):
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    fmt = reference.output_memory_format(x)
    assert out.is_contiguous(memory_format=fmt), f"output is not {fmt} (x strides {x.stride()})"


def check_op(op, x, *args, **kwargs):
    out = run_cuda(op, x, *args, **kwargs)
    exact, same = run_references(op, x, *args, **kwargs)
    if op == "masked_moments":
        for got, e, s, name in zip(out, exact, same, ("mean", "var")):
            assert got.dtype == torch.float32 and got.shape == e.shape and got.is_contiguous()
            assert_close_to_spec(got, e, s, MOMENTS_REL_ATOL, f"masked_moments {name}")
    else:
        assert_output_like_x(out, x)
        assert_close_to_spec(out, exact, same, REL_ATOL[x.dtype], op)
    return out


# --------------------------------------------------------------------------------------------------
# Each op against the spec: dtypes x layouts x forced paths x shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hard", "soft", "empty"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_moments(gen, path, dtype, layout, shape, kind):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, kind)
    mean, var = check_op("masked_moments", x, masks, eps=1e-5)
    if kind == "empty":  # the spec's defined result for an all-zero mask: exactly 0, 0
        assert (mean[:, -1] == 0).all() and (var[:, -1] == 0).all()


@pytest.mark.parametrize("kind", ["hard", "soft", "empty"])
@pytest.mark.parametrize("stats", ["global", "region"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_region_adain(gen, path, dtype, layout, shape, stats, kind):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, kind)
    gamma, beta = make_style(gen, n, k, c)
    check_op("region_adain", x, masks, gamma, beta, stats=stats, eps=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_highway_adain(gen, path, dtype, layout, shape):
    n, c, h, w, _ = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    mask = make_masks(gen, n, 1, h, w, "soft")
    gamma_f, beta_f = make_style(gen, n, 1, c)
    gamma_b, beta_b = make_style(gen, n, 1, c)
    check_op("highway_adain", x, mask, gamma_f[:, 0], beta_f[:, 0], gamma_b[:, 0], beta_b[:, 0], eps=1e-5)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("op", ["instance_norm", "layer_norm"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_norms(gen, path, dtype, layout, shape, op, affine):
    n, c, h, w, _ = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    weight, bias = make_affine(gen, c) if affine else (None, None)
    check_op(op, x, weight, bias, eps=1e-5)


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_pass_row_boundaries(gen, path, dtype, shape):
    """Rows at and just past each one-pass configuration's capacity, vector and scalar."""
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype)
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    check_op("masked_moments", x, masks)
    check_op("region_adain", x, masks, gamma, beta, stats="region")
    check_op("region_adain", x, masks, gamma, beta, stats="global", activation="lrelu")
    check_op("instance_norm", x, *make_affine(gen, c))


@pytest.mark.parametrize("shape", LARGE_SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_rows(gen, path, dtype, layout, shape):
    """256x256 and 512x512 maps: longer than any one-pass row, split over many CTAs."""
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    check_op("masked_moments", x, masks)
    check_op("region_adain", x, masks, gamma, beta, stats="region")
    check_op("region_adain", x, masks, gamma, beta, stats="global")
    check_op("instance_norm", x, *make_affine(gen, c))
    check_op("layer_norm", x, *make_affine(gen, c))


@pytest.mark.parametrize("stats", ["global", "region"])
def test_many_regions(gen, path, stats):
    """K = 40 > 32: the combine kernel's lanes loop over regions."""
    n, c, h, w, k = 2, 3, 24, 20, 40
    x = make_x(gen, n, c, h, w, torch.float32)
    masks = make_masks(gen, n, k, h, w, "soft") / k
    gamma, beta = make_style(gen, n, k, c)
    check_op("region_adain", x, masks, gamma, beta, stats=stats)
    check_op("masked_moments", x, masks)


# --------------------------------------------------------------------------------------------------
# Epilogue: activation, residual (dtypes, layouts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual_kind", [None, "same", "float32", "float64", "other_layout"])
@pytest.mark.parametrize("activation", [None, "relu", "lrelu"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_epilogue(gen, path, dtype, layout, activation, residual_kind):
    n, c, h, w, k = 2, 16, 12, 10, 2
    x = make_x(gen, n, c, h, w, dtype, layout)
    residual = None
    if residual_kind is not None:
        residual = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(DEVICE)
        residual = residual.to({"same": dtype, "float32": torch.float32, "float64": torch.float64,
                                "other_layout": dtype}[residual_kind])
        residual = laid_out(residual, ("nchw" if layout == "nhwc" else "nhwc") if residual_kind == "other_layout"
                            else layout)
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    weight, bias = make_affine(gen, c)
    epilogue = dict(activation=activation, residual=residual)
    check_op("region_adain", x, masks, gamma, beta, stats="region", **epilogue)
    check_op("region_adain", x, masks, gamma, beta, stats="global", **epilogue)
    check_op("instance_norm", x, weight, bias, **epilogue)
    check_op("layer_norm", x, weight, bias, **epilogue)


# --------------------------------------------------------------------------------------------------
# Inputs the kernels must handle without vector access or in-place reads
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_and_strided_inputs(gen, path, dtype):
    """A base address off the 16-byte grid takes the scalar path; other strides are copied to NCHW."""
    n, c, h, w, k = 2, 16, 8, 8, 2
    storage = torch.empty(n * c * h * w + 1, dtype=dtype, device=DEVICE)
    x = storage[1:].view(n, c, h, w)
    x.copy_(make_x(gen, n, c, h, w, dtype))
    assert x.data_ptr() % 16 != 0
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    check_op("region_adain", x, masks, gamma, beta, stats="region")
    check_op("masked_moments", x, masks)
    check_op("instance_norm", x, None, None)

    strided = make_x(gen, n, c, h, 2 * w, dtype)[..., ::2]  # neither NCHW- nor channels_last-contiguous
    check_op("region_adain", strided, masks, gamma, beta, stats="global")
    check_op("layer_norm", strided, None, None)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.float16, torch.float64])
def test_masks_of_other_sizes_and_dtypes(gen, path, mask_dtype):
    """Masks are cast and resized (bilinear, align_corners=False) as the spec does, before the kernels."""
    x = make_x(gen, 2, 8, 13, 17, torch.float16, "nhwc")
    masks = make_masks(gen, 2, 2, 7, 9, "soft")
    masks = (masks > 0.5) if mask_dtype == torch.bool else masks.to(mask_dtype)
    gamma, beta = make_style(gen, 2, 2, 8)
    check_op("region_adain", x, masks, gamma, beta, stats="region")
    check_op("masked_moments", x, masks)


def test_empty_region_contributes_nothing(gen, path):
    """Spec: with region statistics an all-zero mask's term is exactly 0."""
    x = make_x(gen, 2, 8, 16, 16, torch.float32)
    masks = make_masks(gen, 2, 3, 16, 16, "empty")
    gamma, beta = make_style(gen, 2, 3, 8)
    with_empty = run_cuda("region_adain", x, masks, gamma, beta, stats="region")
    without = run_cuda("region_adain", x, masks[:, :2], gamma[:, :2], beta[:, :2], stats="region")
    torch.testing.assert_close(with_empty, without, rtol=0, atol=0)


def test_empty_batch():
    x = torch.empty(0, 3, 4, 4, device=DEVICE)
    masks = torch.empty(0, 2, 4, 4, device=DEVICE)
    mean, var = torch.ops.lmt.masked_moments(x, masks, 1e-5)
    assert mean.shape == var.shape == (0, 2, 3)
    assert torch.ops.lmt.instance_norm(x, None, None, 1e-5, 0, None).shape == x.shape
    assert torch.ops.lmt.layer_norm(x, None, None, 1e-5, 0, None).shape == x.shape


def test_current_stream_and_cuda_graph_capture(gen):
    """Kernels go on the current stream (a graph capture fails otherwise) and replay correctly."""
    x = make_x(gen, 2, 64, 32, 32, torch.float16, "nhwc")
    masks = make_masks(gen, 2, 2, 32, 32, "soft")
    gamma, beta = make_style(gen, 2, 2, 64)
    expected = ops.region_adain(x, masks, gamma, beta, stats="region", backend=BACKEND)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture
            ops.region_adain(x, masks, gamma, beta, stats="region", backend=BACKEND)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ops.region_adain(x, masks, gamma, beta, stats="region", backend=BACKEND)
    x.copy_(make_x(gen, 2, 64, 32, 32, torch.float16, "nhwc"))
    graph.replay()
    torch.cuda.synchronize()
    fresh = ops.region_adain(x, masks, gamma, beta, stats="region", backend=BACKEND)
    torch.testing.assert_close(captured, fresh, rtol=0, atol=0)
    assert not torch.equal(captured, expected)


def launched_kernels(fn) -> list[str]:
    """Names of the lmt CUDA kernels `fn` launches (from the profiler), in order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if "lmt::gpu" in e.name]


# (op, layout, (N, C, H, W), forced path, kernels expected): the heuristic of csrc/cuda/api.cu and where
# a forced path applies. The thresholds assume a GPU with more than 2 SMs.
PATH_CASES = [
    ("instance_norm", "nchw", (2, 256, 32, 32), "auto", ["onepass_rows_kernel"]),
    ("instance_norm", "nchw", (1, 4, 128, 128), "auto", ["partial_rows_kernel", "combine_kernel", "apply_nchw_kernel"]),
    ("instance_norm", "nchw", (1, 4, 128, 128), "onepass", ["onepass_rows_kernel"]),
    ("instance_norm", "nchw", (2, 256, 32, 32), "split", ["partial_rows_kernel", "combine_kernel", "apply_nchw_kernel"]),
    ("instance_norm", "nchw", (1, 2, 256, 256), "onepass", ["partial_rows_kernel", "combine_kernel", "apply_nchw_kernel"]),
    ("instance_norm", "nhwc", (2, 64, 32, 32), "onepass", ["partial_nhwc_kernel", "combine_kernel", "apply_nhwc_kernel"]),
    ("layer_norm", "nchw", (2, 64, 32, 32), "onepass", ["partial_rows_kernel", "combine_kernel", "apply_nchw_kernel"]),
    ("layer_norm", "nhwc", (2, 64, 32, 32), "auto", ["partial_rows_kernel", "combine_kernel", "apply_nhwc_kernel"]),
    ("masked_moments", "nchw", (2, 64, 32, 32), "split", ["partial_rows_kernel", "combine_kernel"]),
    ("masked_moments", "nchw", (2, 64, 32, 32), "onepass", ["onepass_rows_kernel"]),
]


@pytest.mark.parametrize("op,layout,shape,forced,expected", PATH_CASES)
def test_path_selection(gen, monkeypatch, op, layout, shape, forced, expected):
    monkeypatch.setenv(FORCE_PATH_ENV, forced)
    x = make_x(gen, *shape, torch.float16, layout)
    if op == "masked_moments":
        masks = make_masks(gen, shape[0], 2, *shape[2:], "soft")
        names = launched_kernels(lambda: ops.masked_moments(x, masks, backend=BACKEND))
    else:
        names = launched_kernels(lambda: getattr(ops, op)(x, None, None, backend=BACKEND))
    if not names:
        pytest.skip("the profiler recorded no CUDA kernels here (CUPTI unavailable?)")
    found = [next((kernel for kernel in expected if kernel in name), None) for name in names]
    assert found == expected, f"launched {names}, expected kernels {expected}"


# --------------------------------------------------------------------------------------------------
# Errors from the CUDA glue
# --------------------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors(monkeypatch):
    x = torch.randn(1, 2, 4, 4, device=DEVICE)
    with pytest.raises(RuntimeError, match="masks is on cpu"):
        torch.ops.lmt.masked_moments(x, torch.rand(1, 1, 4, 4), 1e-5)
    with pytest.raises(RuntimeError, match="resize them first"):
        torch.ops.lmt.masked_moments(x, torch.rand(1, 1, 2, 2, device=DEVICE), 1e-5)
    with pytest.raises(RuntimeError, match="reference backend"):
        torch.ops.lmt.instance_norm(x.double(), None, None, 1e-5, 0, None)
    with pytest.raises(RuntimeError, match="activation must be"):
        torch.ops.lmt.layer_norm(x, None, None, 1e-5, 7, None)
    monkeypatch.setenv(FORCE_PATH_ENV, "fastest")
    with pytest.raises(RuntimeError, match=FORCE_PATH_ENV):
        torch.ops.lmt.instance_norm(x, None, None, 1e-5, 0, None)


# --------------------------------------------------------------------------------------------------
# Registration: autograd and opcheck on CUDA tensors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_match_reference_backend(gen, path, layout):
    n, c, h, w, k = 2, 8, 9, 12, 2
    x = make_x(gen, n, c, h, w, torch.float32, layout)
    masks = make_masks(gen, n, k, 5, 6, "soft")  # resized inside the op: the resize is differentiated too
    gamma, beta = make_style(gen, n, k, c)
    weight, bias = make_affine(gen, c)
    residual = laid_out(torch.randn(n, c, h, w, generator=gen).to(DEVICE), layout)
    cases = {
        "masked_moments": lambda t, be: sum(
            (o * torch.linspace(-1, 1, o.numel(), device=DEVICE).view_as(o)).sum()
            for o in ops.masked_moments(t["x"], t["masks"], backend=be)),
        "region_adain": lambda t, be: ops.region_adain(
            t["x"], t["masks"], t["gamma"], t["beta"], stats="region", activation="lrelu", residual=t["residual"],
            backend=be),
        "highway_adain": lambda t, be: ops.highway_adain(
            t["x"], t["masks"][:, :1], t["gamma"][:, 0], t["beta"][:, 0], t["gamma"][:, 1], t["beta"][:, 1],
            backend=be),
        "instance_norm": lambda t, be: ops.instance_norm(
            t["x"], t["weight"], t["bias"], activation="relu", residual=t["residual"], backend=be),
        "layer_norm": lambda t, be: ops.layer_norm(t["x"], t["weight"], t["bias"], backend=be),
    }
    base = dict(x=x, masks=masks, gamma=gamma, beta=beta, weight=weight, bias=bias, residual=residual)
    for name, fn in cases.items():
        grads = {}
        for be in (BACKEND, "reference"):
            leaves = {key: t.detach().clone().requires_grad_(True) for key, t in base.items()}
            out = fn(leaves, be)
            if isinstance(out, torch.Tensor):
                out = (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum()
            out.backward()
            grads[be] = {key: t.grad for key, t in leaves.items()}
        for key, got in grads[BACKEND].items():
            want = grads["reference"][key]
            assert (got is None) == (want is None), f"{name}: grad of {key} present in only one backend"
            if got is not None:
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"{name}: grad of {key}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck(gen, layout):
    n, c, h, w, k = 2, 8, 6, 10, 2
    x = make_x(gen, n, c, h, w, torch.float32, layout).requires_grad_(True)
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    weight, bias = make_affine(gen, c)
    residual = laid_out(torch.randn(n, c, h, w, generator=gen).to(DEVICE), layout)
    lmt = torch.ops.lmt
    cases = [
        (lmt.masked_moments.default, (x, masks, 1e-5)),
        (lmt.region_adain.default, (x, masks, gamma, beta, True, 1e-5, 1, residual)),
        (lmt.region_adain.default, (x, masks, gamma, beta, False, 1e-5, 0, None)),
        (lmt.instance_norm.default, (x, weight, bias, 1e-5, 2, residual)),
        (lmt.layer_norm.default, (x, None, None, 1e-5, 0, None)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# --------------------------------------------------------------------------------------------------
# The tiny LOMIT generator end to end
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _generator_outputs(generator, backend, x_in, x_ex):
    generator.set_backend(backend)
    with torch.no_grad():
        out = generator(x_in, x_ex)
    return [out.image, out.input_mask, out.exemplar_mask]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tiny_lomit_generator_matches_reference(gen, no_tf32, dtype, layout):
    from lmt_fast.models import LOMITConfig, LOMITGenerator

    torch.manual_seed(0)
    generator = LOMITGenerator(LOMITConfig.tiny()).to(DEVICE).eval()
    x_in = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1).to(DEVICE)
    x_ex = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1).to(DEVICE)
    if layout == "nhwc":
        generator = generator.to(memory_format=torch.channels_last)
        x_in, x_ex = laid_out(x_in, layout), laid_out(x_ex, layout)
    exact = _generator_outputs(generator, "reference", x_in, x_ex)  # float32 reference
    generator = generator.to(dtype)
    same = _generator_outputs(generator, "reference", x_in.to(dtype), x_ex.to(dtype))
    got = _generator_outputs(generator, BACKEND, x_in.to(dtype), x_ex.to(dtype))
    for name, g, e, s in zip(("image", "input_mask", "exemplar_mask"), got, exact, same):
        if dtype == torch.float32:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4, msg=f"generator {name}")
        else:
            assert_close_to_spec(g, e, s, 1e-2, f"generator {name} in {dtype}")
