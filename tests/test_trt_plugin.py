"""The TensorRT plugin for lmt::RegionAdaIN (csrc/trt) and its builder (lmt_fast.export.plugin_build).

Where TensorRT's C++ headers and nvcc are at hand (headers found as build_plugin finds them:
$TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT/include, the tensorrt Python packages, /usr/include...): every
source compiles without warnings (compile only: no TensorRT library is needed), the default library
links with no TensorRT symbol left undefined, exports exactly TensorRT's entry points, and passes
plugin_check's host-side checks (creator, fields, serialisation, types, shapes, formats, workspace and
errors, driven as TensorRT drives them). The static-registration variant (trtexec --staticPlugins) is
linked against a stand-in libnvinfer (csrc/trt/check/fake_nvinfer.cpp) and must register its creator
while it is dlopened. With a GPU also plugin_check --gpu (enqueue against a float64 reference), and with
the tensorrt package too an engine built from a --custom-ops export is compared with PyTorch, and trtexec
(where on PATH) builds it with either plugin flag. Without a GPU, plugin_check --gpu runs against the CUDA
emulator (csrc/emu), which needs only the headers. Elsewhere these tests skip and say what is missing.

The builder's search logic and commands are tested everywhere (no compiler needed).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lmt_fast.export import plugin_build
from lmt_fast.export.plugin_build import (
    LIBRARY_NAME, STATIC_LIBRARY_NAME, PluginBuildError, Toolchain, build_plugin, compile_commands,
    compile_plugin_objects, find_tensorrt_include, find_tensorrt_library, gencode_flags,
)

ROOT = Path(__file__).resolve().parents[1]
CHECK_SOURCE = ROOT / "csrc" / "trt" / "check" / "plugin_check.cpp"
FAKE_NVINFER_SOURCE = ROOT / "csrc" / "trt" / "check" / "fake_nvinfer.cpp"
STRICT_FLAGS = ("-Werror", "-Wshadow", "-Wnon-virtual-dtor", "-Woverloaded-virtual")


def _find(fn):
    try:
        return fn(), None
    except PluginBuildError as exc:
        return None, str(exc)


NVCC, NVCC_PROBLEM = _find(plugin_build.find_nvcc)
HEADERS, HEADERS_PROBLEM = _find(find_tensorrt_include)
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _build_reason() -> str | None:
    if NVCC is None:
        return f"cannot build the plugin here: {NVCC_PROBLEM}"
    if HEADERS is None:
        return f"cannot build the plugin here: {HEADERS_PROBLEM}"
    if shutil.which("g++") is None and not os.environ.get("CXX"):
        return "cannot build the plugin here: no C++ compiler (g++ or $CXX)"
    return None


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU (or PyTorch without CUDA)"


BUILD_REASON = _build_reason()
needs_build = pytest.mark.skipif(BUILD_REASON is not None, reason=str(BUILD_REASON))
needs_gpu = pytest.mark.skipif(_cuda_reason() is not None, reason=str(_cuda_reason()))
needs_tensorrt = pytest.mark.skipif(not HAS_TENSORRT, reason="the tensorrt package is not installed")


# -- the builder's logic (no compiler needed) -------------------------------------------------------------

def _fake_headers(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "NvInferRuntime.h").write_text("// stand-in\n")
    return folder


def test_headers_are_looked_for_in_the_documented_order(tmp_path, monkeypatch):
    env_dir, arg_dir, root = _fake_headers(tmp_path / "env"), _fake_headers(tmp_path / "arg"), tmp_path / "root"
    _fake_headers(root / "include")
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(env_dir))
    monkeypatch.setenv("TENSORRT_ROOT", str(root))
    assert find_tensorrt_include(arg_dir) == arg_dir                 # the argument first
    assert find_tensorrt_include() == env_dir                        # then $TENSORRT_INCLUDE_DIR
    monkeypatch.delenv("TENSORRT_INCLUDE_DIR")
    assert find_tensorrt_include() == root / "include"               # then $TENSORRT_ROOT/include
    with pytest.raises(PluginBuildError, match="no NvInferRuntime.h"):
        find_tensorrt_include(tmp_path / "nowhere")                  # a wrong argument is an error, not skipped


def test_missing_headers_error_names_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("TENSORRT_ROOT", raising=False)
    monkeypatch.setattr(plugin_build, "_package_dirs", lambda *names: [tmp_path / "pkg" / "tensorrt"])
    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: False if self.name == "NvInferRuntime.h" else real_is_file(self))
    with pytest.raises(PluginBuildError) as err:
        find_tensorrt_include()
    text = str(err.value)
    assert "NvInferRuntime.h" in text and "$TENSORRT_INCLUDE_DIR" in text and "the tensorrt Python package" in text
    assert "/usr/include" in text and "Set TENSORRT_INCLUDE_DIR" in text


def test_libnvinfer_is_only_looked_for_by_the_static_build(tmp_path):
    (tmp_path / "libnvinfer.so.10").write_bytes(b"")
    (tmp_path / "libnvinfer.so.10.13.0").write_bytes(b"")
    assert find_tensorrt_library(tmp_path) == tmp_path / "libnvinfer.so.10"


def test_gencode_flags():
    assert gencode_flags(("80", "9.0")) == ["-gencode", "arch=compute_80,code=sm_80", "-gencode",
                                           "arch=compute_90,code=sm_90", "-gencode", "arch=compute_90,code=compute_90"]
    assert gencode_flags(["sm_90"])[-1] == "arch=compute_90,code=compute_90"
    with pytest.raises(PluginBuildError, match="cuda_arch"):
        gencode_flags(())


def test_compile_commands(tmp_path):
    tools = Toolchain(Path("/cuda/bin/nvcc"), "g++", Path("/cuda/include"), Path("/cuda/lib64"), Path("/trt/include"))
    commands = compile_commands(tmp_path, tools, ("80",), static_registration=True, extra_cxx_flags=["-Werror"])
    by_source = {source.name: argv for source, _, argv in commands}
    objects = {source.name: obj for source, obj, _ in commands}
    # the kernels' objects are shared by both variants; the plugin's C++ is compiled per variant
    assert objects["api.cu"] == tmp_path / "kernels" / "api.cu.o"
    assert objects["plugin_library.cpp"] == tmp_path / "static" / "plugin_library.o"
    assert set(by_source) >= {"onepass.cu", "api.cu", "region_adain_plugin.cpp", "plugin_library.cpp"}
    cu = by_source["api.cu"]
    assert cu[0] == "/cuda/bin/nvcc" and "-c" in cu and "--use_fast_math" in cu and "arch=compute_80,code=sm_80" in cu
    assert "-fPIC" in cu and "/trt/include" not in cu                  # the kernels need no TensorRT
    cxx = by_source["plugin_library.cpp"]
    assert cxx[0] == "g++" and "-c" in cxx and cxx[cxx.index("-isystem") + 1] == "/trt/include"
    assert "-DLMT_TRT_STATIC_REGISTRATION=1" in cxx and "-Werror" in cxx and "-fvisibility=hidden" in cxx
    link = plugin_build.link_command(tmp_path / LIBRARY_NAME, [tmp_path / "a.o"], tools)
    assert "-lcudart_static" in link and "-Wl,--no-undefined" in link
    assert any(flag.startswith("-Wl,--version-script=") for flag in link) and not any("nvinfer" in f for f in link)
    static = plugin_build.link_command(tmp_path / STATIC_LIBRARY_NAME, [tmp_path / "a.o"], tools,
                                       Path("/trt/lib/libnvinfer.so"))
    assert "/trt/lib/libnvinfer.so" in static and "-Wl,-rpath,/trt/lib" in static and "-Wl,-z,nodelete" in static


def test_plugin_sources_are_torch_free():
    """The plugin builds without PyTorch: only TensorRT's headers and the kernels' C API."""
    for path in sorted((ROOT / "csrc" / "trt").rglob("*")):
        if path.suffix in (".h", ".cpp", ".cu", ".cuh"):
            text = path.read_text()
            for banned in ("#include <ATen", "#include <torch", "#include <c10", "#include <pybind11"):
                assert banned not in text, f"{path.relative_to(ROOT)} includes {banned[10:]} headers"


def test_missing_nvcc_is_one_clear_error(tmp_path):
    with pytest.raises(PluginBuildError, match="nvcc not found at"):
        plugin_build.find_nvcc(tmp_path / "nvcc")


# -- compiling and linking (nvcc, g++ and TensorRT's headers) ------------------------------------------------

@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt_plugin")


@needs_build
def test_plugin_sources_compile_without_warnings(build_dir):
    """Compile only (objects, no link): what CI can do with nothing but TensorRT's headers."""
    objects = compile_plugin_objects(build_dir / "obj", extra_cxx_flags=STRICT_FLAGS)
    names = {o.name for o in objects}
    assert {"region_adain_plugin.o", "plugin_library.o", "onepass.cu.o", "api.cu.o"} <= names
    assert all(o.stat().st_size > 0 for o in objects)


@pytest.fixture(scope="module")
def plugin_library(build_dir) -> Path:
    if BUILD_REASON is not None:
        pytest.skip(BUILD_REASON)
    return build_plugin(build_dir, extra_cxx_flags=STRICT_FLAGS)


def test_library_exports_tensorrts_entry_points_only(plugin_library):
    lib = ctypes.CDLL(str(plugin_library))      # loads without a GPU (static CUDA runtime, initialised lazily)
    assert lib.getCreators and lib.setLoggerFinder
    info = lib.lmt_trt_plugin_info
    info.restype = ctypes.c_char_p
    assert info().decode().startswith("lmt::RegionAdaIN version 1 (IPluginV3)")
    for private in ("lmt_cuda_region_adain", "getPluginCreators", "cudaMalloc"):
        with pytest.raises(AttributeError):
            getattr(lib, private)
    if shutil.which("nm"):
        undefined = subprocess.run(["nm", "-D", "--undefined-only", str(plugin_library)], capture_output=True,
                                   text=True, check=True).stdout
        assert "getPluginRegistry" not in undefined and "nvinfer" not in undefined.lower()
        assert "cuda" not in undefined.lower()   # the CUDA runtime is linked in


def test_objects_are_reused_when_nothing_changed(plugin_library, build_dir):
    objects = sorted((build_dir / "obj").rglob("*.o"))
    before = {o: o.stat().st_mtime_ns for o in objects}
    build_plugin(build_dir, extra_cxx_flags=STRICT_FLAGS)
    assert {o: o.stat().st_mtime_ns for o in objects} == before


@pytest.fixture(scope="module")
def plugin_check(build_dir, plugin_library) -> Path:
    tools = plugin_build.toolchain()
    exe = build_dir / "plugin_check"
    argv = [tools.cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", *STRICT_FLAGS, "-isystem", str(tools.tensorrt_include),
            "-isystem", str(tools.cuda_include), str(CHECK_SOURCE), "-o", str(exe), "-L", str(tools.cuda_lib),
            "-lcudart_static", "-ldl", "-lpthread", "-lrt"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return exe


def test_plugin_behaves_as_tensorrt_expects(plugin_check, plugin_library):
    proc = subprocess.run([str(plugin_check), str(plugin_library)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 check(s) failed" in proc.stdout, proc.stdout + proc.stderr
    assert "ok: exports getCreators and setLoggerFinder" in proc.stdout


@pytest.fixture(scope="module")
def fake_nvinfer(build_dir) -> Path:
    """csrc/trt/check/fake_nvinfer.cpp as <dir>/libnvinfer.so: getPluginRegistry / getLogger without TensorRT."""
    if BUILD_REASON is not None:
        pytest.skip(BUILD_REASON)
    tools = plugin_build.toolchain()
    folder = build_dir / "fake_nvinfer"
    folder.mkdir(exist_ok=True)
    argv = [tools.cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Wextra", *STRICT_FLAGS,
            "-Wl,-soname,libnvinfer.so", "-isystem", str(tools.tensorrt_include), "-isystem", str(tools.cuda_include),
            str(FAKE_NVINFER_SOURCE), "-o", str(folder / "libnvinfer.so")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


def test_static_registration_variant_registers_while_loading(plugin_check, build_dir, fake_nvinfer):
    """trtexec --staticPlugins (and LD_PRELOAD) only dlopen the library: the static-registration build must
    register its creator with libnvinfer's registry while it loads, and then list none in getCreators."""
    library = build_plugin(build_dir, tensorrt_lib=fake_nvinfer, static_registration=True,
                           extra_cxx_flags=STRICT_FLAGS)        # reuses the kernels' objects of the default build
    assert library.name == STATIC_LIBRARY_NAME and (build_dir / LIBRARY_NAME).is_file()
    proc = subprocess.run([str(plugin_check), str(library), "--static"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 check(s) failed" in proc.stdout, proc.stdout + proc.stderr
    assert "ok: loading the library registered RegionAdaIN/1 in namespace lmt" in proc.stdout
    lib = ctypes.CDLL(str(library))
    info = lib.lmt_trt_plugin_info
    info.restype = ctypes.c_char_p
    assert info().decode().endswith("static registration")
    # the default build has no static registration: plugin_check --static finds no registry behind it
    proc = subprocess.run([str(plugin_check), str(build_dir / LIBRARY_NAME), "--static"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "FAIL: the library is linked against fake_nvinfer" in proc.stdout


@needs_gpu
def test_plugin_enqueue_matches_the_reference_on_the_gpu(plugin_check, plugin_library):
    proc = subprocess.run([str(plugin_check), str(plugin_library), "--gpu"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "0 check(s) failed" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("ok: enqueue") == 15


@pytest.mark.skipif(HEADERS is None, reason=f"cannot build the plugin here: {HEADERS_PROBLEM}")
def test_plugin_enqueue_matches_the_reference_with_emulated_cuda():
    """plugin_check --gpu on the CPU: the plugin and its kernels built against the CUDA emulator (csrc/emu),
    driven as TensorRT drives them (configure, workspace, an odd workspace address, enqueue) for the three
    dtypes, both statistics, activations, a residual and both kernel pipelines."""
    import cuda_emulator

    library, checker = cuda_emulator.build_trt_plugin(HEADERS)
    proc = subprocess.run([str(checker), str(library), "--gpu"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "0 check(s) failed" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("ok: enqueue") == 15


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found")
@needs_build
def test_cmake_configures(tmp_path, fake_nvinfer):
    for variant, extra in (("dynamic", []), ("static", ["-DLMT_TRT_STATIC_REGISTRATION=ON",
                                                        f"-DTENSORRT_LIB_DIR={fake_nvinfer}"])):
        proc = subprocess.run(["cmake", "-S", str(ROOT / "csrc" / "trt"), "-B", str(tmp_path / variant),
                               f"-DTENSORRT_INCLUDE_DIR={HEADERS}", f"-DCMAKE_CUDA_COMPILER={NVCC}", *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (tmp_path / variant / "Makefile").is_file() or (tmp_path / variant / "build.ninja").is_file()


# -- with TensorRT and a GPU -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def custom_engines(styled_checkpoint, plugin_library, tmp_path_factory):
    """Engines of the styled checkpoint's --custom-ops exports (float32, float16), built with the plugin."""
    if not HAS_TENSORRT:
        pytest.skip("the tensorrt package is not installed")
    if _cuda_reason() is not None:
        pytest.skip(_cuda_reason())
    pytest.importorskip("onnxscript")
    from lmt_fast.export.cache import cached_export
    from lmt_fast.export.contract import Variant
    from lmt_fast.export.onnx import read_metadata
    from lmt_fast.export.profiles import build_profile
    from lmt_fast.export.tensorrt import build_engine
    from lmt_fast.io import load_checkpoint

    generator = load_checkpoint(styled_checkpoint).generator
    cache = tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"
    folder = tmp_path_factory.mktemp("plugin_engines")
    plans, onnx_files = {}, {}
    for dtype in ("float32", "float16"):
        onnx_files[dtype] = path = cached_export(generator, Variant(dtype=dtype, custom_ops=True), directory=cache)
        contract, config, _ = read_metadata(path)
        profile = build_profile(contract, ["input:1x3x64x64:2x3x64x64:4x3x128x128"])
        plans[dtype] = build_engine(path, folder / f"custom-{dtype}.plan", [profile], contract=contract,
                                    config=config, plugins=[plugin_library])
    return generator, onnx_files, plans


@needs_gpu
@needs_tensorrt
@pytest.mark.parametrize("dtype, tolerance", [("float32", 5e-3), ("float16", 2e-2)])
def test_custom_op_engine_matches_pytorch(custom_engines, plugin_library, dtype, tolerance):
    import torch

    from lmt_fast.runtime.tensorrt import EngineRunner

    generator, onnx_files, plans = custom_engines
    import onnx

    assert any(n.op_type == "RegionAdaIN" and n.domain == "lmt" for n in onnx.load(str(onnx_files[dtype])).graph.node)
    runner = EngineRunner(plans[dtype], plugins=[plugin_library])
    assert runner.contract.variant.custom_ops
    generator = generator.to("cuda").eval()
    for n, h, w in [(1, 64, 64), (3, 128, 96)]:
        g = torch.Generator().manual_seed(n)
        x, e = (torch.rand(n, 3, h, w, generator=g).cuda() * 2 - 1 for _ in range(2))
        with torch.no_grad():
            want = generator(x, e)
        t = getattr(torch, dtype)
        out = runner(input=x.to(t), exemplar=e.to(t))
        torch.cuda.synchronize()
        for key in ("image", "input_mask", "exemplar_mask"):
            ref = getattr(want, key)
            got = out[key].float()
            assert got.shape == ref.shape
            assert ((got - ref).abs().max() / ref.abs().max()).item() <= tolerance, key


@needs_gpu
@needs_tensorrt
def test_engine_runner_loads_the_plugin_library_once(custom_engines, plugin_library, monkeypatch):
    from lmt_fast.runtime import tensorrt as rt

    plan = custom_engines[2]["float32"]
    first = rt.EngineRunner(plan, plugins=[plugin_library])
    monkeypatch.setenv(rt.PLUGINS_ENV, str(plugin_library))
    second = rt.EngineRunner(plan)                                    # from $LMT_FAST_TRT_PLUGINS, loaded already
    assert first.plugins == [plugin_library] and second.plugins == [plugin_library]
    assert str(plugin_library.resolve()) in rt._LOADED_PLUGINS


@needs_gpu
@needs_tensorrt
@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec not found on PATH (it is not in the pip wheels)")
@pytest.mark.parametrize("flag", ["--dynamicPlugins", "--staticPlugins"])
def test_trtexec_builds_the_custom_op_export(custom_engines, plugin_library, build_dir, tmp_path, flag):
    """Both ways trtexec loads a plugin library: loadLibrary + getCreators, or a plain dlopen of the
    static-registration build (linked against the libnvinfer found as build_plugin finds it)."""
    library = plugin_library
    if flag == "--staticPlugins":
        try:
            library = build_plugin(build_dir / "real_static", static_registration=True)
        except PluginBuildError as exc:
            pytest.skip(f"the static-registration build needs libnvinfer: {exc}")
    onnx_path = custom_engines[1]["float32"]
    plan = tmp_path / "trtexec.plan"
    shapes = "input:{0}x3x64x64,exemplar:{0}x3x64x64"
    proc = subprocess.run(["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan}", f"{flag}={library}",
                           f"--minShapes={shapes.format(1)}", f"--optShapes={shapes.format(2)}",
                           f"--maxShapes={shapes.format(4)}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and plan.is_file(), proc.stdout[-4000:] + proc.stderr[-4000:]
