"""The CUDA kernels of csrc/cuda, run on the CPU by the CUDA emulator (csrc/emu), against the spec.

The same sources nvcc compiles (tests/test_cuda_compile.py) are built for the CPU against emulated CUDA
headers and called through their torch-free C API (tests/cuda_emulator.py says how). Every block runs
its threads as fibers that switch at barriers, so the kernels' indexing, tiling, reductions, both
pipelines (one pass, split), the vector and scalar access paths, the epilogues and the launch heuristic
are all exercised here without a GPU. What this cannot show: speed, and memory-model effects between
threads that the barrier-level interleaving does not produce (the order tests below vary it).
tests/test_ops_cuda.py runs the same kernels on a real GPU when there is one.

Accuracy rule as in test_ops_cuda.py: the kernel's max error against the float64 reference is at most
twice the reference's own error in the input dtype plus about one unit in the last place. Outputs and
workspace start as NaN, every buffer sits between guard bands that must survive the call.
"""
from __future__ import annotations

import os
import random
import subprocess
import time
import zlib

import pytest
import torch

import cuda_emulator as emu_build
from spec_tolerance import MOMENTS_REL_ATOL, REL_ATOL, assert_close_to_spec, run_references

COMPILER = emu_build.find_compiler()
if COMPILER is None:
    pytest.skip("no C++ compiler (g++ or clang++) to build the CUDA emulator", allow_module_level=True)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (N, C, H, W, K): odd and even sizes; vector-width rows (H*W or C a multiple of 8) and scalar ones.
SHAPES = [(1, 5, 13, 17, 2), (3, 1, 9, 11, 1), (2, 16, 16, 16, 3), (1, 40, 8, 8, 2)]
# NCHW rows at the one-pass configurations' limits (1024, 4096, 8192, 16384 elements) and just past them,
# which the split path covers with 1..5 tiles of 4096.
ROW_SHAPES = [(1, 2, h, w, 2) for h, w in [(32, 32), (25, 41), (64, 64), (17, 241), (64, 128), (128, 128),
                                           (129, 127)]]
# (layout, path) pairs that run different code: NHWC always takes the split path.
ROUTES = [("nchw", "onepass"), ("nchw", "split"), ("nchw", "auto"), ("nhwc", "auto")]


@pytest.fixture(scope="module")
def cuda():
    try:
        return emu_build.EmulatedCuda.load()
    except emu_build.EmulatorBuildError as e:
        pytest.fail(f"the CUDA sources do not build for the emulator: {e}")


@pytest.fixture
def ops(cuda):
    cuda.configure(order="forward")
    return emu_build.EmulatedOps(cuda)


@pytest.fixture
def gen(request):
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def laid_out(t, layout):
    return t.to(memory_format=torch.channels_last) if layout == "nhwc" else t.contiguous()


def make_x(gen, n, c, h, w, dtype, layout):
    x = (-2.3 + 0.5 * torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)).to(dtype)
    return laid_out(x, layout)


def make_masks(gen, n, k, h, w, kind):
    u = torch.rand(n, k, h, w, generator=gen, dtype=torch.float64)
    masks = u if kind == "soft" else (u > 0.5).double()
    if kind == "empty":
        masks[:, -1] = 0
    return masks.float()


def make_style(gen, n, k, c):
    return (0.5 + torch.rand(n, k, c, generator=gen)), torch.randn(n, k, c, generator=gen)


def make_affine(gen, c):
    return (0.5 + torch.rand(c, generator=gen)), torch.randn(c, generator=gen)


def check(out, op, args, kwargs, rel_atol, pick=None, what=""):
    exact, same = run_references(op, *args, **kwargs)
    if pick is not None:
        exact, same = exact[pick], same[pick]
    assert_close_to_spec(out, exact, same, rel_atol, what)


def region_inputs(gen, n, c, h, w, k, dtype, layout, residual_dtype):
    """x, a residual, soft masks, gamma and beta for one region_adain call."""
    x = make_x(gen, n, c, h, w, dtype, layout)
    residual = laid_out(torch.randn(n, c, h, w, generator=gen).to(residual_dtype), layout)
    masks = make_masks(gen, n, k, h, w, "soft")
    return (x, residual, masks, *make_style(gen, n, k, c))


# --------------------------------------------------------------------------------------------------
# Each op against the spec
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("route", ROUTES, ids="-".join)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_moments(ops, gen, dtype, route, shape):
    layout, path = route
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, "empty" if k > 1 else "soft")
    mean, var = ops.masked_moments(x, masks, eps=1e-5, path=path)
    for i, (got, name) in enumerate(((mean, "mean"), (var, "var"))):
        check(got, "masked_moments", (x, masks), {"eps": 1e-5}, MOMENTS_REL_ATOL, pick=i, what=name)
    if k > 1:  # an all-zero mask gives exactly 0, 0
        assert (mean[:, -1] == 0).all() and (var[:, -1] == 0).all()


@pytest.mark.parametrize("kind", ["hard", "soft", "empty"])
@pytest.mark.parametrize("stats", ["global", "region"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("route", ROUTES, ids="-".join)
@pytest.mark.parametrize("dtype", DTYPES)
def test_region_adain(ops, gen, dtype, route, shape, stats, kind):
    layout, path = route
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, kind)
    gamma, beta = make_style(gen, n, k, c)
    y = ops.region_adain(x, masks, gamma, beta, stats=stats, path=path)
    check(y, "region_adain", (x, masks, gamma, beta), {"stats": stats}, REL_ATOL[dtype],
                         what=f"region_adain {stats}")


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("route", ROUTES, ids="-".join)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["instance_norm", "layer_norm"])
def test_norms(ops, gen, op, dtype, route, shape, affine):
    layout, path = route
    n, c, h, w, _ = shape
    x = make_x(gen, n, c, h, w, dtype, layout)
    weight, bias = make_affine(gen, c) if affine else (None, None)
    y = getattr(ops, op)(x, weight, bias, path=path)
    check(y, op, (x, weight, bias), {}, REL_ATOL[dtype], what=op)


@pytest.mark.parametrize("shape", ROW_SHAPES, ids=lambda s: f"{s[2]}x{s[3]}")
@pytest.mark.parametrize("path", ["onepass", "split"])
def test_row_lengths_at_configuration_limits(ops, gen, path, shape):
    n, c, h, w, k = shape
    x = make_x(gen, n, c, h, w, torch.float32, "nchw")
    masks = make_masks(gen, n, k, h, w, "soft")
    gamma, beta = make_style(gen, n, k, c)
    for stats in ("global", "region"):
        y = ops.region_adain(x, masks, gamma, beta, stats=stats, path=path)
        check(y, "region_adain", (x, masks, gamma, beta), {"stats": stats}, REL_ATOL[x.dtype],
                             what=f"{h}x{w} {stats}")
    y = ops.instance_norm(x, path=path)
    check(y, "instance_norm", (x,), {}, REL_ATOL[x.dtype], what="instance_norm")


# --------------------------------------------------------------------------------------------------
# Epilogue, scalar path, layer norm over several tiles
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual_dtype", DTYPES)
@pytest.mark.parametrize("activation", ["relu", "lrelu"])
@pytest.mark.parametrize("route", ROUTES, ids="-".join)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_epilogue(ops, gen, dtype, route, activation, residual_dtype):
    layout, path = route
    n, c, h, w, k = 2, 16, 9, 16, 2
    x, residual, masks, gamma, beta = region_inputs(gen, n, c, h, w, k, dtype, layout, residual_dtype)
    weight, bias = make_affine(gen, c)
    epilogue = {"activation": activation, "residual": residual}
    y = ops.region_adain(x, masks, gamma, beta, stats="region", path=path, **epilogue)
    check(y, "region_adain", (x, masks, gamma, beta), {"stats": "region", **epilogue},
                         REL_ATOL[dtype], what="region_adain + epilogue")
    for op in ("instance_norm", "layer_norm"):
        y = getattr(ops, op)(x, weight, bias, path=path, **epilogue)
        check(y, op, (x, weight, bias), epilogue, REL_ATOL[dtype], what=f"{op} + epilogue")


@pytest.mark.parametrize("route", ROUTES, ids="-".join)
@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_tensors_take_the_scalar_path(ops, gen, dtype, route):
    """Shapes whose rows allow 16-byte vectors, but tensors one element off a 16-byte boundary: the
    kernels must fall back to scalar accesses (the emulator fails a misaligned vector access)."""
    layout, path = route
    n, c, h, w, k = 2, 16, 8, 16, 2
    x, residual, masks, gamma, beta = region_inputs(gen, n, c, h, w, k, dtype, layout, dtype)
    y = ops.region_adain(x, masks, gamma, beta, stats="region", residual=residual, path=path, offset=1)
    check(y, "region_adain", (x, masks, gamma, beta), {"stats": "region", "residual": residual},
                         REL_ATOL[dtype], what="misaligned region_adain")
    y = ops.layer_norm(x, path=path, offset=1)
    check(y, "layer_norm", (x,), {}, REL_ATOL[dtype], what="misaligned layer_norm")


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_layer_norm_over_many_tiles(ops, gen, layout):
    """A sample of 3 * 61 * 59 elements spans several 4096-element tiles of the split path."""
    x = make_x(gen, 2, 3, 61, 59, torch.float32, layout)
    weight, bias = make_affine(gen, 3)
    y = ops.layer_norm(x, weight, bias)
    check(y, "layer_norm", (x, weight, bias), {}, REL_ATOL[x.dtype], what="layer_norm")


# --------------------------------------------------------------------------------------------------
# Determinism across thread and block orders, the launch heuristic, argument checks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids="-".join)
def test_results_do_not_depend_on_the_order_threads_and_blocks_run(cuda, gen, route):
    """Forward, reversed and shuffled schedules give bit-identical outputs: no missing barrier lets a
    thread read shared memory before it is written, and reductions have a fixed order."""
    layout, path = route
    ops = emu_build.EmulatedOps(cuda)
    x = make_x(gen, 2, 24, 19, 21, torch.float32, layout)
    masks = make_masks(gen, 2, 3, 19, 21, "soft")
    gamma, beta = make_style(gen, 2, 3, 24)
    outputs = []
    for order, seed in [("forward", 0), ("reverse", 0), ("shuffled", 1), ("shuffled", 2)]:
        cuda.configure(order=order, seed=seed)
        outputs.append([ops.region_adain(x, masks, gamma, beta, stats="region", path=path),
                        ops.region_adain(x, masks, gamma, beta, stats="global", path=path),
                        *ops.masked_moments(x, masks, path=path), ops.layer_norm(x, path=path)])
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            assert torch.equal(a, b)


def launches_of(cuda, ops, x, **kwargs):
    before = cuda.lmt_emu_launches()
    ops.instance_norm(x, **kwargs)
    return cuda.lmt_emu_launches() - before


def test_auto_path_follows_the_multiprocessor_count(cuda, gen):
    """A 128x128 row takes one pass when there are enough rows to fill the GPU, and the split path (three
    launches) when N * C < 2 * SMs; the workspace query agrees with what the call does."""
    ops = emu_build.EmulatedOps(cuda)
    x = make_x(gen, 1, 4, 128, 128, torch.float32, "nchw")
    args = (emu_build.OPS["instance_norm"], 0, 0, 1, 4, 128, 128, 1, emu_build.PATHS["auto"])
    cuda.configure(device=1, sm_count=1)  # 4 rows fill one SM
    assert launches_of(cuda, ops, x) == 1
    assert cuda.lmt_cuda_launch_workspace_size(*args) == 0
    cuda.configure(device=2, sm_count=132)
    assert launches_of(cuda, ops, x) == 3
    assert cuda.lmt_cuda_launch_workspace_size(*args) > 0
    short = make_x(gen, 1, 4, 64, 64, torch.float32, "nchw")  # one tile per row: splitting gains nothing
    assert launches_of(cuda, ops, short) == 1
    cuda.configure()


def region_adain_status(cuda, x_in, masks_in, k, workspace, workspace_bytes, **overrides):
    n, c, h, w = x_in.shape
    gamma = torch.ones(n, max(k, 1), c)
    y = torch.empty_like(x_in)
    args = dict(x=x_in.data_ptr(), y=y.data_ptr(), dtype=0, layout=0, n=n, c=c, h=h, w=w,
                masks=masks_in.data_ptr(), k=k, gamma=gamma.data_ptr(), beta=gamma.data_ptr(), stats=1, eps=1e-5,
                activation=0, residual=None, residual_dtype=0, workspace=workspace,
                workspace_bytes=workspace_bytes, path=emu_build.PATHS["split"], stream=None)
    args.update(overrides)
    return cuda.lmt_cuda_region_adain(*args.values())


def test_bad_arguments_are_refused_before_any_launch(cuda, gen):
    cuda.configure()
    x = make_x(gen, 2, 3, 8, 8, torch.float32, "nchw")
    masks = make_masks(gen, 2, 2, 8, 8, "soft")
    size = cuda.lmt_cuda_workspace_size(emu_build.OPS["region_adain"], 0, 0, 2, 3, 8, 8, 2)
    ws = torch.empty(size // 4 + 64)
    aligned = ws.data_ptr() + (-ws.data_ptr() % 256)
    assert region_adain_status(cuda, x, masks, 2, aligned, size) == 0
    before = cuda.lmt_emu_launches()
    invalid = 1  # cudaErrorInvalidValue
    assert region_adain_status(cuda, x, masks, 0, aligned, size) == invalid  # K = 0
    assert region_adain_status(cuda, x, masks, 2, aligned, size - 256) == invalid  # workspace too small
    assert region_adain_status(cuda, x, masks, 2, aligned + 4, size) == invalid  # workspace misaligned
    assert region_adain_status(cuda, x, masks, 2, None, size) == invalid
    assert region_adain_status(cuda, x, masks, 2, aligned, size, masks=None) == invalid
    assert region_adain_status(cuda, x, masks, 2, aligned, size, activation=7) == invalid
    assert region_adain_status(cuda, x, masks, 2, aligned, size, path=9) == invalid
    assert region_adain_status(cuda, x, masks, 2, aligned, size, dtype=5) == invalid
    assert region_adain_status(cuda, x, masks, 2, aligned, size, h=0) == invalid
    assert cuda.lmt_emu_launches() == before
    assert region_adain_status(cuda, x, masks, 2, None, 0, n=0) == 0  # N = 0: a valid no-op
    assert cuda.lmt_emu_launches() == before


# --------------------------------------------------------------------------------------------------
# The emulator catches what it claims to (tests/data/emu_selftest.cu: kernels with deliberate bugs)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken():
    return emu_build.EmulatedCuda.load(selftest=True)


def test_emulator_exposes_a_missing_barrier_through_the_thread_order(broken):
    x = torch.arange(1.0, 65.0)
    sums = {}
    for kernel in ("racy", "synced"):
        for order in ("forward", "reverse"):
            broken.configure(order=order)
            out = torch.full((1,), float("nan"))
            assert getattr(broken, f"selftest_{kernel}_sum")(x.data_ptr(), out.data_ptr()) == 0
            sums[kernel, order] = out.item()
    assert sums["synced", "forward"] == sums["synced", "reverse"] == x.sum().item()
    # Forward: thread 0 reads before the others have written; reversed: after.
    assert sums["racy", "forward"] != sums["racy", "reverse"] == x.sum().item()


def test_emulator_reports_a_deadlock_instead_of_hanging(broken):
    broken.configure()
    out = torch.full((64,), float("nan"))
    assert broken.selftest_divergent_barrier(out.data_ptr()) == 719  # cudaErrorLaunchFailure
    assert "deadlock" in broken.message()


def test_emulator_fails_a_misaligned_vector_access(broken):
    broken.configure()
    x, out = torch.randn(64), torch.full((32,), float("nan"))
    assert x.data_ptr() % 16 == 0
    assert broken.selftest_misaligned_load(x.data_ptr(), out.data_ptr()) == 716  # cudaErrorMisalignedAddress
    assert "misaligned" in broken.message()


def test_emulator_catches_writes_past_dynamic_shared_memory(broken):
    broken.configure()
    out = torch.full((32,), float("nan"))
    assert broken.selftest_shared_overflow(out.data_ptr()) == 719
    assert "past the end of its 16 bytes of dynamic shared memory" in broken.message()


# --------------------------------------------------------------------------------------------------
# Memory bounds: every entry point under AddressSanitizer with exactly sized buffers
# --------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not emu_build.asan_available(), reason="the C++ compiler cannot build AddressSanitizer programs")
def test_kernels_stay_inside_every_buffer():
    """tests/data/emu_bounds_driver.cpp: 200 calls (4 ops, float32 / float16, both layouts, every pipeline,
    odd and vector-width shapes, a two-tile row) with every buffer allocated to its exact size; ASan reports
    any read or write outside them. Then the same with x one element short, which ASan must catch."""
    driver = emu_build.build_bounds_driver()
    clean = subprocess.run([str(driver)], capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0 and "AddressSanitizer" not in clean.stderr, clean.stdout[-2000:] + clean.stderr[-4000:]
    assert "200 calls, 0 failed" in clean.stdout
    short = subprocess.run([str(driver)], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "LMT_EMU_SHORT_X": "1"})
    assert short.returncode != 0 and "heap-buffer-overflow" in short.stderr


# --------------------------------------------------------------------------------------------------
# Opt-in: a randomised sweep for kernel changes (LMT_FAST_EMU_SWEEP_S=240 pytest -k sweep)
# --------------------------------------------------------------------------------------------------

SWEEP_SECONDS = float(os.environ.get("LMT_FAST_EMU_SWEEP_S", "0"))


def random_case(rng: random.Random):
    """One random call: op, sizes (C up to 257, K up to 7), dtype, layout, path, misalignment, epilogue."""
    while True:
        n, k = rng.choice([1, 2, 3]), rng.randint(1, 7)
        c = rng.choice([1, 2, 3, 7, 8, 9, 31, 32, 33, 64, 65, 130, 257])
        h, w = rng.choice([1, 2, 3, 5, 16, 31, 47, 64, 70]), rng.choice([1, 2, 7, 8, 16, 33, 64, 90])
        if n * c * h * w <= 400_000:
            break
    return dict(op=rng.choice(["masked_moments", "region_adain", "instance_norm", "layer_norm"]),
                shape=(n, c, h, w, k),
                dtype=rng.choice(DTYPES), layout=rng.choice(["nchw", "nhwc"]),
                path=rng.choice(["auto", "onepass", "split"]), offset=rng.choice([0, 0, 1]),
                stats=rng.choice(["global", "region"]), activation=rng.choice([None, "relu", "lrelu"]),
                residual_dtype=rng.choice([None, None, *DTYPES]), affine=rng.random() < 0.5,
                order=rng.choice(["forward", "reverse", "shuffled"]), seed=rng.randrange(1 << 30),
                device=rng.randrange(4), sm_count=rng.choice([1, 8, 132]))


def run_case(cuda, ops, case):
    cuda.configure(order=case["order"], seed=case["seed"], device=case["device"], sm_count=case["sm_count"])
    gen = torch.Generator().manual_seed(case["seed"])
    n, c, h, w, k = case["shape"]
    dtype, layout, op = case["dtype"], case["layout"], case["op"]
    x = make_x(gen, n, c, h, w, dtype, layout)
    masks = make_masks(gen, n, k, h, w, "hard" if case["seed"] % 2 else "soft")
    residual = None
    if case["residual_dtype"] is not None and op != "masked_moments":
        residual = laid_out(torch.randn(n, c, h, w, generator=gen).to(case["residual_dtype"]), layout)
    epilogue = {"activation": case["activation"], "residual": residual}
    where = {"path": case["path"], "offset": case["offset"]}
    if op == "masked_moments":
        mean, var = ops.masked_moments(x, masks, **where)
        check(mean, op, (x, masks), {}, MOMENTS_REL_ATOL, pick=0, what=str(case))
        check(var, op, (x, masks), {}, MOMENTS_REL_ATOL, pick=1, what=str(case))
    elif op == "region_adain":
        gamma, beta = make_style(gen, n, k, c)
        y = ops.region_adain(x, masks, gamma, beta, stats=case["stats"], **epilogue, **where)
        check(y, op, (x, masks, gamma, beta), {"stats": case["stats"], **epilogue}, REL_ATOL[dtype], what=str(case))
    else:
        weight, bias = make_affine(gen, c) if case["affine"] else (None, None)
        y = getattr(ops, op)(x, weight, bias, **epilogue, **where)
        check(y, op, (x, weight, bias), epilogue, REL_ATOL[dtype], what=str(case))


@pytest.mark.skipif(SWEEP_SECONDS <= 0, reason="opt-in: set LMT_FAST_EMU_SWEEP_S to the seconds to sweep")
def test_random_sweep(cuda):
    ops = emu_build.EmulatedOps(cuda)
    rng = random.Random(os.environ.get("LMT_FAST_EMU_SWEEP_SEED", "7"))
    start, cases = time.monotonic(), 0
    while time.monotonic() - start < SWEEP_SECONDS:
        run_case(cuda, ops, random_case(rng))
        cases += 1
    assert cases > 0
