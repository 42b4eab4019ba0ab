"""Build csrc/cuda for the CPU against the CUDA emulator (csrc/emu) and call its C API through ctypes.

The kernel sources are compiled as they are, apart from two mechanical rewrites (the emulator's header
explains why): launches `k<<<cfg>>>(args)` become `lmt_emu::Launch(cfg).run(k, args)`, and
`extern __shared__ T name[];` becomes a pointer to the launch's dynamic shared memory. The vector
casts of common.cuh are routed through an alignment check. Every rewrite must match what it expects,
so a change to the kernels' text cannot silently switch a check off.

The library is built once per source hash into a cache directory (LMT_FAST_EMU_CACHE, default
~/.cache/lmt_fast/cuda_emu) and is torch-free; tensors are passed as host pointers.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CUDA_DIR = CSRC / "cuda"
EMU_DIR = CSRC / "emu"
SELFTEST_SOURCE = Path(__file__).resolve().parent / "data" / "emu_selftest.cu"
BOUNDS_DRIVER_SOURCE = Path(__file__).resolve().parent / "data" / "emu_bounds_driver.cpp"
ASAN_FLAGS = ["-fsanitize=address", "-fno-omit-frame-pointer"]

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^;<>]*>)?)<<<([^;]*?)>>>\(")
EXTERN_SHARED = re.compile(r"extern __shared__ (\w+) (\w+)\[\];")
VECTOR_CAST = re.compile(r"reinterpret_cast<((?:const )?Pack<T, N>\*)>\(p\)")

# How many times each rewrite must apply in each file (a source change that breaks a rewrite fails here).
EXPECTED_REWRITES = {
    "onepass.cu": {"launch": 1, "extern_shared": 1},
    "split_stats.cu": {"launch": 2},
    "combine.cu": {"launch": 1},
    "apply.cu": {"launch": 2, "extern_shared": 1},
    "common.cuh": {"vector_cast": 2},
    "emu_selftest.cu": {"launch": 5, "extern_shared": 1},
}


class EmulatorBuildError(RuntimeError):
    pass


def find_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++") or shutil.which("clang++")


def rewrite(name: str, text: str) -> str:
    counts = {}
    text, counts["launch"] = LAUNCH.subn(lambda m: f"::lmt_emu::Launch({m.group(2)}).run({m.group(1)}, ", text)
    text = text.replace(", )", ")")  # a kernel launched without arguments
    text, counts["extern_shared"] = EXTERN_SHARED.subn(r"\1* \2 = ::lmt_emu::dynamic_shared<\1>();", text)
    text, counts["vector_cast"] = VECTOR_CAST.subn(r"::lmt_emu::checked_cast<\1>(p)", text)
    expected = EXPECTED_REWRITES.get(name, {})
    for rule, count in counts.items():
        if count != expected.get(rule, 0):
            raise EmulatorBuildError(f"{name}: rewrite '{rule}' applied {count} times, expected "
                                     f"{expected.get(rule, 0)}; update tests/cuda_emulator.py with the kernels")
    return text


def source_digest(compiler: str, units: list[Path]) -> str:
    digest = hashlib.sha256(compiler.encode())
    for path in sorted({*CUDA_DIR.iterdir(), *EMU_DIR.rglob("*"), *(CSRC / "include" / "lmt").iterdir(),
                        *units, Path(__file__)}):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """LMT_FAST_EMU_CACHE, else ~/.cache/lmt_fast/cuda_emu, else (not writable) a folder in the temp dir."""
    configured = os.environ.get("LMT_FAST_EMU_CACHE")
    if configured:
        return Path(configured)
    home_cache = Path.home() / ".cache" / "lmt_fast" / "cuda_emu"
    try:
        home_cache.mkdir(parents=True, exist_ok=True)
        return home_cache
    except OSError:
        return Path(tempfile.gettempdir()) / "lmt_fast_cuda_emu"


def _compiler(compiler: str | None) -> str:
    compiler = compiler or find_compiler()
    if compiler is None:
        raise EmulatorBuildError("no C++ compiler (g++ or clang++) found")
    return compiler


def _rewritten_sources(work: Path, sources: list[Path]) -> list[Path]:
    """The kernel directory and `sources`, rewritten into `work`; returns the rewritten `sources`."""
    for path in {*CUDA_DIR.iterdir(), *sources}:
        (work / path.name).write_text(rewrite(path.name, path.read_text()))
    return [work / p.name for p in sources]


def _flags(work: Path, extra_includes=()) -> list[str]:
    return ["-std=c++17", "-O2", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-function",
            f"-I{EMU_DIR / 'include'}", f"-I{CSRC / 'include'}", f"-I{work}",
            *(f"-isystem{path}" for path in extra_includes)]


def _compile(compiler: str, units: list[Path], flags: list[str], work: Path, jobs: int) -> list[Path]:
    objects, running = [], []
    for unit in units:
        obj = work / (unit.stem + ".o")
        objects.append(obj)
        running.append((unit, subprocess.Popen([compiler, *flags, "-x", "c++", "-c", str(unit), "-o", str(obj)],
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        if len(running) >= jobs:
            _wait(running.pop(0))
    for item in running:
        _wait(item)
    return objects


def _link(compiler: str, target: Path, arguments: list[str]) -> None:
    """Link into a temporary name, then rename: a concurrent build never loads half a file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _wait((target, subprocess.Popen([compiler, "-o", str(partial), *arguments],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    os.replace(partial, target)


def _wait(item) -> None:
    unit, proc = item
    output, _ = proc.communicate()
    if proc.returncode != 0:
        raise EmulatorBuildError(f"compiling {unit} for the emulator failed:\n{output[-4000:]}")


def _build(compiler: str, target: Path, kernel_sources: list[Path], extra_units=(), extra_flags=(),
           includes=(), link=("-shared",), jobs: int = 2) -> Path:
    """Rewrite `kernel_sources`, compile them with the emulator's control unit and `extra_units`, link
    `target` (kept when it exists: the callers name it by a hash of everything that goes into it)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lmt_cuda_emu_") as tmp:
        work = Path(tmp)
        units = [*_rewritten_sources(work, kernel_sources), EMU_DIR / "emu_control.cpp", *extra_units]
        objects = _compile(compiler, units, [*_flags(work, includes), *extra_flags], work, jobs)
        _link(compiler, target, [*link, *map(str, objects)])
    return target


def build(compiler: str | None = None, jobs: int = 2, selftest: bool = False) -> Path:
    """Compile the emulated library (cached by source hash) and return its path.

    selftest=True builds tests/data/emu_selftest.cu (kernels with deliberate bugs) instead of csrc/cuda."""
    compiler = _compiler(compiler)
    sources = [SELFTEST_SOURCE] if selftest else sorted(CUDA_DIR.glob("*.cu"))
    name = "liblmt_cuda_emu_selftest" if selftest else "liblmt_cuda_emu"
    return _build(compiler, cache_dir() / f"{name}_{source_digest(compiler, sources)}.so", sources, jobs=jobs)


def build_bounds_driver(compiler: str | None = None, jobs: int = 2) -> Path:
    """tests/data/emu_bounds_driver.cpp with the emulated kernels, under AddressSanitizer: an executable
    that calls every entry point with exactly sized buffers and exits 0 when ASan saw nothing."""
    compiler = _compiler(compiler)
    kernels = sorted(CUDA_DIR.glob("*.cu"))
    target = cache_dir() / f"emu_bounds_driver_{source_digest(compiler, [*kernels, BOUNDS_DRIVER_SOURCE])}"
    return _build(compiler, target, kernels, [BOUNDS_DRIVER_SOURCE], ASAN_FLAGS, link=ASAN_FLAGS, jobs=jobs)


def asan_available(compiler: str | None = None) -> bool:
    """Whether the compiler can build and run an AddressSanitizer program here."""
    compiler = compiler or find_compiler()
    if compiler is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source, exe = Path(tmp) / "probe.cpp", Path(tmp) / "probe"
        source.write_text("int main() { return 0; }\n")
        built = subprocess.run([compiler, *ASAN_FLAGS, str(source), "-o", str(exe)], capture_output=True)
        return built.returncode == 0 and subprocess.run([str(exe)], capture_output=True).returncode == 0


def build_trt_plugin(tensorrt_include: Path, compiler: str | None = None, jobs: int = 2) -> tuple[Path, Path]:
    """The TensorRT plugin (csrc/trt) with emulated kernels, and plugin_check against emulated CUDA memory.

    Returns (library, plugin_check). Needs TensorRT's headers only: `plugin_check LIBRARY --gpu` drives the
    plugin as TensorRT does and compares enqueue with a float64 reference, here on the CPU."""
    compiler = _compiler(compiler)
    trt = CSRC / "trt"
    plugin_sources = [trt / "region_adain_plugin.cpp", trt / "plugin_library.cpp"]
    checker_source = trt / "check" / "plugin_check.cpp"
    kernels = sorted(CUDA_DIR.glob("*.cu"))
    digest = source_digest(compiler + str(tensorrt_include),
                           [*kernels, *plugin_sources, checker_source, trt / "region_adain_plugin.h",
                            trt / "exports.map"])
    folder = cache_dir() / f"trt_plugin_{digest}"
    library, checker = folder / "liblmt_trt_plugin_emu.so", folder / "plugin_check_emu"
    _build(compiler, library, kernels, plugin_sources, [f"-I{trt}"], [tensorrt_include],
           link=["-shared", f"-Wl,--version-script={trt / 'exports.map'}"], jobs=jobs)
    if not checker.is_file():
        _link(compiler, checker, [*_flags(folder, [tensorrt_include]), "-x", "c++", str(checker_source), "-x", "none",
                                  "-ldl"])
    return library, checker


# ---- the C API ------------------------------------------------------------------------------------

DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
LAYOUTS = {"nchw": 0, "nhwc": 1}
PATHS = {"auto": 0, "onepass": 1, "split": 2}
OPS = {"masked_moments": 0, "region_adain": 1, "instance_norm": 2, "layer_norm": 3}
ORDERS = {"forward": 0, "reverse": 1, "shuffled": 2}

_i64, _f32, _ptr, _int, _size = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_SHAPE = [_int, _int, _i64, _i64, _i64, _i64]  # dtype, layout, n, c, h, w

SIGNATURES = {
    "lmt_cuda_workspace_size": (_size, [_int, _int, _int, _i64, _i64, _i64, _i64, _i64]),
    "lmt_cuda_launch_workspace_size": (_size, [_int, _int, _int, _i64, _i64, _i64, _i64, _i64, _int]),
    "lmt_cuda_masked_moments": (_int, [_ptr, *_SHAPE, _ptr, _i64, _f32, _ptr, _ptr, _ptr, _size, _int, _ptr]),
    "lmt_cuda_region_adain": (_int, [_ptr, _ptr, *_SHAPE, _ptr, _i64, _ptr, _ptr, _int, _f32, _int, _ptr, _int,
                                     _ptr, _size, _int, _ptr]),
    "lmt_cuda_instance_norm": (_int, [_ptr, _ptr, *_SHAPE, _ptr, _ptr, _f32, _int, _ptr, _int, _ptr, _size, _int,
                                      _ptr]),
    "lmt_cuda_layer_norm": (_int, [_ptr, _ptr, *_SHAPE, _ptr, _ptr, _f32, _int, _ptr, _int, _ptr, _size, _int,
                                   _ptr]),
}
CONTROL_SIGNATURES = {
    "lmt_emu_set_device": (None, [_int, _int]),
    "lmt_emu_set_order": (None, [_int, ctypes.c_uint64]),
    "lmt_emu_message": (ctypes.c_char_p, []),
    "lmt_emu_launches": (_i64, []),
    "lmt_emu_reset": (None, []),
}
SELFTEST_SIGNATURES = {
    "selftest_racy_sum": (_int, [_ptr, _ptr]),
    "selftest_synced_sum": (_int, [_ptr, _ptr]),
    "selftest_divergent_barrier": (_int, [_ptr]),
    "selftest_misaligned_load": (_int, [_ptr, _ptr]),
    "selftest_shared_overflow": (_int, [_ptr]),
}


@dataclass
class EmulatedCuda:
    """The csrc/cuda C API, running on the CPU."""

    lib: ctypes.CDLL

    @classmethod
    def load(cls, selftest: bool = False) -> "EmulatedCuda":
        """The kernels of csrc/cuda, or (selftest) the deliberately broken kernels of emu_selftest.cu."""
        lib = ctypes.CDLL(str(build(selftest=selftest)))
        api = SELFTEST_SIGNATURES if selftest else SIGNATURES
        for name, (restype, argtypes) in {**api, **CONTROL_SIGNATURES}.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        return cls(lib)

    def __getattr__(self, name: str):
        return getattr(self.lib, name)

    def configure(self, *, order: str = "forward", seed: int = 0, device: int = 0, sm_count: int = 132) -> None:
        self.lib.lmt_emu_reset()
        self.lib.lmt_emu_set_order(ORDERS[order], seed)
        self.lib.lmt_emu_set_device(device, sm_count)

    def message(self) -> str:
        return self.lib.lmt_emu_message().decode()


# ---- the ops on torch CPU tensors -----------------------------------------------------------------

ACTIVATIONS = {None: 0, "relu": 1, "lrelu": 2}
GUARD = 64  # elements of guard band on each side of every buffer the kernels write


class EmulatorError(RuntimeError):
    pass


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _layout(x) -> str:
    import torch

    if x.is_contiguous():
        return "nchw"
    if x.is_contiguous(memory_format=torch.channels_last):
        return "nhwc"
    raise ValueError(f"x must be dense NCHW or channels_last, got strides {x.stride()}")


class Buffer:
    """A dense tensor inside a larger poisoned buffer: NaN where the kernels must write, a random guard band
    on both sides that must survive. The data starts `offset` elements past an `align`-byte boundary
    (offset > 0 forces the kernels' scalar path)."""

    def __init__(self, shape, dtype, layout="nchw", offset=0, fill=None, align=16):
        import torch

        numel = 1
        for s in shape:
            numel *= s
        self.flat = torch.randn(numel + 2 * GUARD + offset + align).to(dtype)
        size = self.flat.element_size()
        pad = (-(self.flat.data_ptr() + GUARD * size) % align) // size  # allocations are 64-byte aligned
        start = GUARD + pad + offset
        self.flat[start:start + numel] = float("nan") if fill is None else fill
        self.guard = torch.cat([self.flat[:start], self.flat[start + numel:]]).clone()
        body = self.flat[start:start + numel]
        if layout == "nhwc":
            n, c, h, w = shape
            self.tensor = body.view(n, h, w, c).permute(0, 3, 1, 2)
        else:
            self.tensor = body.view(*shape)
        self.start, self.numel = start, numel

    def ptr(self) -> int:
        return self.tensor.data_ptr()

    def assert_guard_intact(self, what: str) -> None:
        import torch

        now = torch.cat([self.flat[:self.start], self.flat[self.start + self.numel:]])
        changed = (now != self.guard) & ~(now.isnan() & self.guard.isnan())
        if changed.any():
            raise AssertionError(f"{what}: {int(changed.sum())} elements written outside the tensor")


def placed(t, offset=0):
    """A copy of `t` (same layout) at `offset` elements past a 16-byte boundary, in a guarded buffer."""
    layout = "nhwc" if t.dim() == 4 and _layout(t) == "nhwc" else "nchw"
    buf = Buffer(tuple(t.shape), t.dtype, layout, offset, fill=0)
    buf.tensor.copy_(t)
    return buf


class EmulatedOps:
    """The four ops of the C API on CPU tensors, with poisoned outputs and workspace and guard checks.

    `offset` misaligns x, y, residual and masks by that many elements (0 keeps them 16-byte aligned)."""

    def __init__(self, cuda: EmulatedCuda):
        self.cuda = cuda

    def _workspace(self, op, x, k):
        import torch

        n, c, h, w = x.shape
        size = self.cuda.lmt_cuda_workspace_size(OPS[op], DTYPES[_dtype_name(x.dtype)], LAYOUTS[_layout(x)],
                                                 n, c, h, w, k)
        ws = Buffer((size // 4,), torch.float32, align=256)  # sizes are whole 256-byte blocks
        return ws, (ws.ptr() if size else None), size

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise EmulatorError(f"{what} returned cudaError {status}: {self.cuda.message() or 'argument check'}")

    def _common(self, x):
        n, c, h, w = x.shape
        return DTYPES[_dtype_name(x.dtype)], LAYOUTS[_layout(x)], n, c, h, w

    def masked_moments(self, x, masks, eps=1e-5, path="auto", offset=0):
        import torch

        n, c = x.shape[:2]
        k = masks.shape[1]
        xb, mb = placed(x, offset), placed(masks.float().contiguous(), offset)
        mean, var = Buffer((n, k, c), torch.float32), Buffer((n, k, c), torch.float32)
        ws, ws_ptr, size = self._workspace("masked_moments", x, k)
        status = self.cuda.lmt_cuda_masked_moments(xb.ptr(), *self._common(x), mb.ptr(), k, eps, mean.ptr(),
                                                   var.ptr(), ws_ptr, size, PATHS[path], None)
        self._check(status, "lmt_cuda_masked_moments")
        for buf, name in ((mean, "mean"), (var, "var"), (ws, "workspace")):
            buf.assert_guard_intact(name)
        return mean.tensor, var.tensor

    def _output(self, x, offset):
        return Buffer(tuple(x.shape), x.dtype, _layout(x), offset)

    def _epilogue(self, x, activation, residual, offset):
        if residual is None:
            return ACTIVATIONS[activation], None, None, 0
        rb = placed(residual, offset)
        assert _layout(residual) == _layout(x), "residual follows x's layout"
        return ACTIVATIONS[activation], rb, rb.ptr(), DTYPES[_dtype_name(residual.dtype)]

    def region_adain(self, x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None,
                     path="auto", offset=0):
        k = masks.shape[1]
        xb, mb = placed(x, offset), placed(masks.float().contiguous(), offset)
        y = self._output(x, offset)
        act, rb, r_ptr, r_dtype = self._epilogue(x, activation, residual, offset)
        ws, ws_ptr, size = self._workspace("region_adain", x, k)
        status = self.cuda.lmt_cuda_region_adain(
            xb.ptr(), y.ptr(), *self._common(x), mb.ptr(), k, gamma.float().contiguous().data_ptr(),
            beta.float().contiguous().data_ptr(), int(stats == "region"), eps, act, r_ptr, r_dtype, ws_ptr, size,
            PATHS[path], None)
        self._check(status, "lmt_cuda_region_adain")
        y.assert_guard_intact("y")
        ws.assert_guard_intact("workspace")
        return y.tensor

    def _norm(self, fn, op, x, weight, bias, eps, activation, residual, path, offset):
        xb = placed(x, offset)
        y = self._output(x, offset)
        act, rb, r_ptr, r_dtype = self._epilogue(x, activation, residual, offset)
        ws, ws_ptr, size = self._workspace(op, x, 1)
        w_ptr = None if weight is None else weight.float().contiguous().data_ptr()
        b_ptr = None if bias is None else bias.float().contiguous().data_ptr()
        status = fn(xb.ptr(), y.ptr(), *self._common(x), w_ptr, b_ptr, eps, act, r_ptr, r_dtype, ws_ptr, size,
                    PATHS[path], None)
        self._check(status, f"lmt_cuda_{op}")
        y.assert_guard_intact("y")
        ws.assert_guard_intact("workspace")
        return y.tensor

    def instance_norm(self, x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, path="auto",
                      offset=0):
        return self._norm(self.cuda.lmt_cuda_instance_norm, "instance_norm", x, weight, bias, eps, activation,
                          residual, path, offset)

    def layer_norm(self, x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, path="auto",
                   offset=0):
        return self._norm(self.cuda.lmt_cuda_layer_norm, "layer_norm", x, weight, bias, eps, activation,
                          residual, path, offset)
