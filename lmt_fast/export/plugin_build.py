"""Build the TensorRT plugin library ``liblmt_trt_plugin.so`` (csrc/trt + csrc/cuda) with nvcc and g++.

    from lmt_fast.export.plugin_build import build_plugin
    library = build_plugin("build/trt")                     # -> build/trt/liblmt_trt_plugin.so

It serves the ``lmt::RegionAdaIN`` nodes of graphs exported with ``lmt-fast export --custom-ops``:

    lmt-fast build-engine model.onnx -o model.plan --plugin build/trt/liblmt_trt_plugin.so
    trtexec --onnx=model.onnx --saveEngine=model.plan --dynamicPlugins=build/trt/liblmt_trt_plugin.so
    EngineRunner("model.plan", plugins=["build/trt/liblmt_trt_plugin.so"])

What it needs: nvcc (PATH, $CUDA_HOME/bin or /usr/local/cuda/bin), a C++17 host compiler (g++ or $CXX) and
TensorRT's C++ headers (NvInferRuntime.h), looked for in this order: the ``tensorrt_include`` argument,
$TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT/include, an ``include`` folder of the installed ``tensorrt`` /
``tensorrt_libs`` Python packages, /usr/include and /usr/include/<arch>-linux-gnu (Debian/Ubuntu
packages). No TensorRT library is linked: the default library registers its creator through the
``getCreators`` / ``setLoggerFinder`` entry points that TensorRT calls after loading it (see
csrc/trt/README.md), so it builds where only the headers are. ``static_registration=True`` builds the
variant ``liblmt_trt_plugin_static.so`` for ``trtexec --staticPlugins``, ``LD_PRELOAD`` (Triton) or a plain
dlopen, which registers itself while loading (as ``REGISTER_TENSORRT_PLUGIN`` does) and so links against
libnvinfer (``tensorrt_lib`` or $TENSORRT_LIB_DIR). Build against the headers of the TensorRT major version
that will load the library: the plugin interfaces' layout differs between TensorRT 10 and 11.

    build_plugin("build/trt", static_registration=True)   # -> build/trt/liblmt_trt_plugin_static.so
    trtexec --onnx=model.onnx --saveEngine=model.plan --staticPlugins=build/trt/liblmt_trt_plugin_static.so

The kernels are compiled with the flags setup.py uses for the torch extension (-O3 --use_fast_math), for
the architectures in ``cuda_arch`` (SASS for each, plus PTX of the newest so later GPUs can JIT it).
Object files are kept under ``<output_dir>/obj`` and rebuilt only when a source, a header or a flag
changes. csrc/ is part of a source checkout, not of an installed wheel.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

LIBRARY_NAME = "liblmt_trt_plugin.so"                 # registers through getCreators (--dynamicPlugins)
STATIC_LIBRARY_NAME = "liblmt_trt_plugin_static.so"   # registers while loading (--staticPlugins, LD_PRELOAD)
DEFAULT_ARCHS = ("80", "90")
CSRC = Path(__file__).resolve().parents[2] / "csrc"
NVCC_FLAGS = ("-std=c++17", "-O3", "--use_fast_math")   # as setup.py's CUDA extension
CXX_FLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra")
COMPILE_TIMEOUT_S = 900
_OUTPUT_TAIL = 6000


class PluginBuildError(RuntimeError):
    """The plugin cannot be built here (a missing tool or header) or a compiler failed; the message says which."""


@dataclass(frozen=True)
class Toolchain:
    nvcc: Path
    cxx: str
    cuda_include: Path
    cuda_lib: Path
    tensorrt_include: Path


# -- finding the tools -------------------------------------------------------------------------------------

def find_nvcc(nvcc: str | os.PathLike | None = None) -> Path:
    """nvcc from the argument, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin."""
    if nvcc is not None:
        path = Path(nvcc)
        if path.is_file():
            return path
        raise PluginBuildError(f"nvcc not found at {path}")
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "nvcc").is_file():
            return Path(root) / "bin" / "nvcc"
    raise PluginBuildError("nvcc (the CUDA compiler) was not found on PATH, in $CUDA_HOME/bin or in "
                           "/usr/local/cuda/bin; install the CUDA toolkit or pass nvcc=")


def _cuda_roots(nvcc: Path) -> list[Path]:
    roots = [nvcc.resolve().parents[1], nvcc.parents[1]]
    roots += [Path(r) for r in (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if r]
    return roots


def cuda_include_dir(nvcc: Path) -> Path:
    """The toolkit's include directory (the one with cuda_runtime_api.h)."""
    for root in _cuda_roots(nvcc):
        for candidate in (root / "include", root / "targets" / f"{platform.machine()}-linux" / "include"):
            if (candidate / "cuda_runtime_api.h").is_file():
                return candidate
    raise PluginBuildError(f"cuda_runtime_api.h not found next to {nvcc} (nor in $CUDA_HOME, /usr/local/cuda)")


def cuda_library_dir(nvcc: Path) -> Path:
    """The toolkit's library directory (the one with libcudart_static.a)."""
    for root in _cuda_roots(nvcc):
        for candidate in (root / "lib64", root / "lib", root / "targets" / f"{platform.machine()}-linux" / "lib"):
            if (candidate / "libcudart_static.a").is_file():
                return candidate
    raise PluginBuildError(f"libcudart_static.a not found next to {nvcc} (nor in $CUDA_HOME, /usr/local/cuda)")


def find_cxx(cxx: str | None = None) -> str:
    for candidate in (cxx, os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise PluginBuildError("no C++ compiler found (g++, c++ or $CXX)")


def _package_dirs(*names: str) -> list[Path]:
    dirs = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs += [Path(p) for p in spec.submodule_search_locations]
    return dirs


def tensorrt_include_candidates(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(where, directory) pairs to look for NvInferRuntime.h in, in order of preference."""
    places: list[tuple[str, Path]] = []
    if explicit is not None:
        places.append(("the tensorrt_include argument", Path(explicit)))
    if os.environ.get("TENSORRT_INCLUDE_DIR"):
        places.append(("$TENSORRT_INCLUDE_DIR", Path(os.environ["TENSORRT_INCLUDE_DIR"])))
    if os.environ.get("TENSORRT_ROOT"):
        places.append(("$TENSORRT_ROOT/include", Path(os.environ["TENSORRT_ROOT"]) / "include"))
    for folder in _package_dirs("tensorrt", "tensorrt_libs"):
        places.append((f"the {folder.name} Python package", folder / "include"))
    places.append(("/usr/include", Path("/usr/include")))
    multiarch = f"/usr/include/{platform.machine()}-linux-gnu"
    places.append((multiarch, Path(multiarch)))
    return places


def find_tensorrt_include(explicit: str | os.PathLike | None = None) -> Path:
    """The directory holding TensorRT's NvInferRuntime.h; PluginBuildError naming every place looked in."""
    places = tensorrt_include_candidates(explicit)
    if explicit is not None and not (Path(explicit) / "NvInferRuntime.h").is_file():
        raise PluginBuildError(f"TensorRT headers not found: {explicit} has no NvInferRuntime.h")
    for _, folder in places:
        if (folder / "NvInferRuntime.h").is_file():
            return folder
    looked = "; ".join(where if where == str(folder) else f"{where} ({folder})" for where, folder in places)
    raise PluginBuildError("TensorRT's C++ headers (NvInferRuntime.h) were not found. Looked in: " + looked +
                           ". Set TENSORRT_INCLUDE_DIR to the include directory of a TensorRT tarball, install "
                           "the libnvinfer-dev package, or use the headers of github.com/NVIDIA/TensorRT (include/)")


def find_tensorrt_library(explicit: str | os.PathLike | None = None) -> Path:
    """libnvinfer.so* for the static-registration build: the argument, $TENSORRT_LIB_DIR, $TENSORRT_ROOT/lib,
    the tensorrt_libs / tensorrt Python packages, /usr/lib/<arch>-linux-gnu."""
    folders: list[Path] = []
    if explicit is not None:
        folders.append(Path(explicit))
    for var, sub in (("TENSORRT_LIB_DIR", ""), ("TENSORRT_ROOT", "lib")):
        if os.environ.get(var):
            folders.append(Path(os.environ[var]) / sub)
    folders += _package_dirs("tensorrt_libs", "tensorrt")
    folders.append(Path(f"/usr/lib/{platform.machine()}-linux-gnu"))
    for folder in folders:
        found = sorted(folder.glob("libnvinfer.so*")) if folder.is_dir() else []
        if found:
            return min(found, key=lambda p: len(p.name))   # libnvinfer.so before libnvinfer.so.10.x.y
    raise PluginBuildError("static_registration=True links against libnvinfer, which was not found in "
                           + ", ".join(str(f) for f in folders) + "; pass tensorrt_lib= or set TENSORRT_LIB_DIR")


def toolchain(tensorrt_include=None, nvcc=None, cxx=None) -> Toolchain:
    nvcc_path = find_nvcc(nvcc)
    return Toolchain(nvcc_path, find_cxx(cxx), cuda_include_dir(nvcc_path), cuda_library_dir(nvcc_path),
                     find_tensorrt_include(tensorrt_include))


# -- sources and commands ------------------------------------------------------------------------------------

def plugin_sources() -> tuple[list[Path], list[Path], list[Path]]:
    """(CUDA sources, C++ sources, headers) of the plugin library."""
    cuda = sorted((CSRC / "cuda").glob("*.cu"))
    cxx = sorted((CSRC / "trt").glob("*.cpp"))
    if not cuda or not cxx:
        raise PluginBuildError(f"the plugin sources (csrc/cuda/*.cu, csrc/trt/*.cpp) are not at {CSRC}; they come "
                               "with a source checkout of lmt_fast, not with an installed wheel")
    headers = sorted((CSRC / "cuda").glob("*.cuh")) + sorted((CSRC / "include" / "lmt").glob("*.h")) + \
        sorted((CSRC / "trt").glob("*.h"))
    return cuda, cxx, headers


def gencode_flags(cuda_arch: Sequence[str]) -> list[str]:
    """-gencode for each architecture ("80", "8.0", "sm_80" all mean sm_80), plus PTX of the newest."""
    archs = sorted({int("".join(ch for ch in str(a) if ch.isdigit()) or "0") for a in cuda_arch})
    if not archs or archs[0] < 50:
        raise PluginBuildError(f"cuda_arch must name CUDA architectures like ('80', '90'), got {tuple(cuda_arch)}")
    flags = []
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    return flags + ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]


def compile_commands(obj_dir: str | os.PathLike, tools: Toolchain, cuda_arch: Sequence[str] = DEFAULT_ARCHS, *,
                     static_registration: bool = False, extra_cxx_flags: Sequence[str] = ()) -> list[tuple]:
    """(source, object file, argv) for every source of the library.

    The kernels go to ``obj_dir/kernels`` and are the same for both registration variants (so building the
    second variant compiles two C++ files only); the plugin's C++ files go to ``obj_dir/dynamic`` or
    ``obj_dir/static``.
    """
    obj_dir = Path(obj_dir)
    cuda, cxx, _ = plugin_sources()
    include = ["-I", str(CSRC / "include")]
    defines = ["-DLMT_TRT_STATIC_REGISTRATION=1"] if static_registration else []
    variant_dir = obj_dir / ("static" if static_registration else "dynamic")
    commands = []
    for source in cuda:
        obj = obj_dir / "kernels" / (source.stem + ".cu.o")
        argv = [str(tools.nvcc), "-c", *NVCC_FLAGS, *gencode_flags(cuda_arch), "-Xcompiler", "-fPIC",
                "-Xcompiler", "-fvisibility=hidden", *include, str(source), "-o", str(obj)]
        commands.append((source, obj, argv))
    for source in cxx:
        obj = variant_dir / (source.stem + ".o")
        argv = [tools.cxx, "-c", *CXX_FLAGS, "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                *defines, *include, "-isystem", str(tools.tensorrt_include), "-isystem", str(tools.cuda_include),
                *extra_cxx_flags, str(source), "-o", str(obj)]
        commands.append((source, obj, argv))
    return commands


def _run(argv: Sequence[str], what: str, verbose: bool = False) -> str:
    if verbose:
        print(" ".join(argv), flush=True)
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PluginBuildError(f"{what} took longer than {COMPILE_TIMEOUT_S} s: {' '.join(argv)}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise PluginBuildError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{output[-_OUTPUT_TAIL:]}")
    return output


def _stamp(argv: Sequence[str], source: Path, headers: Sequence[Path]) -> str:
    """What an object depends on: the command line and the contents of its source and every header."""
    digest = hashlib.sha256("\0".join(argv).encode())
    for path in [source, *headers]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_plugin_objects(obj_dir: str | os.PathLike, tensorrt_include=None, cuda_arch: Sequence[str] = DEFAULT_ARCHS,
                           *, static_registration: bool = False, extra_cxx_flags: Sequence[str] = (), jobs: int = 1,
                           nvcc=None, cxx=None, verbose: bool = False) -> list[Path]:
    """Compile every source of the library to an object file under `obj_dir` (compile only: no TensorRT
    library is needed). Objects whose inputs did not change are kept. Returns the object files."""
    tools = toolchain(tensorrt_include, nvcc, cxx)
    _, _, headers = plugin_sources()
    commands = compile_commands(obj_dir, tools, cuda_arch, static_registration=static_registration,
                                extra_cxx_flags=extra_cxx_flags)
    for _, obj, _ in commands:
        obj.parent.mkdir(parents=True, exist_ok=True)

    def build(entry) -> Path:
        source, obj, argv = entry
        stamp_file = obj.with_name(obj.name + ".stamp")
        stamp = _stamp(argv, source, headers)
        if obj.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
            return obj
        _run(argv, f"compiling {source.relative_to(CSRC.parent)}", verbose)
        stamp_file.write_text(stamp)
        return obj

    # The one-pass kernels take about half of the compile time: start them first.
    ordered = sorted(commands, key=lambda entry: entry[0].name != "onepass.cu")
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        built = list(pool.map(build, ordered))
    order = {entry[1]: i for i, entry in enumerate(commands)}
    return sorted(built, key=order.__getitem__)


def link_command(library: Path, objects: Sequence[Path], tools: Toolchain,
                 tensorrt_library: Path | None = None) -> list:
    """Link with the CUDA runtime statically (no libcudart.so needed at run time), every undefined symbol
    resolved (so a missing TensorRT symbol fails here, not when TensorRT loads the library), and only the
    entry points of csrc/trt/exports.map exported.

    tensorrt_library (the static-registration variant): libnvinfer to link, found at run time through an
    rpath to its directory; and ``-z nodelete``, because TensorRT's global registry keeps pointing at the
    creator after a dlclose (trtexec closes --staticPlugins libraries before the registry goes away).
    """
    argv = [tools.cxx, "-shared", "-o", str(library), *map(str, objects), "-L", str(tools.cuda_lib), "-lcudart_static",
            "-ldl", "-lpthread", "-lrt", "-Wl,--no-undefined", "-Wl,--exclude-libs,ALL", "-Wl,-Bsymbolic",
            f"-Wl,--version-script={CSRC / 'trt' / 'exports.map'}"]
    if tensorrt_library is not None:
        argv += [str(tensorrt_library), f"-Wl,-rpath,{tensorrt_library.parent}", "-Wl,-z,nodelete"]
    return argv


def build_plugin(output_dir: str | os.PathLike, tensorrt_include=None, tensorrt_lib=None,
                 cuda_arch: Sequence[str] = DEFAULT_ARCHS, *, static_registration: bool = False, jobs: int = 1,
                 nvcc=None, cxx=None, extra_cxx_flags: Sequence[str] = (), verbose: bool = False) -> Path:
    """Compile csrc/cuda/*.cu and csrc/trt/*.cpp and link ``<output_dir>/liblmt_trt_plugin.so`` (with
    static_registration: ``liblmt_trt_plugin_static.so``, so both variants can share a directory and the
    kernels' objects); returns its path.

    tensorrt_include: TensorRT's include directory (default: see find_tensorrt_include).
    tensorrt_lib: only for static_registration=True, the directory with libnvinfer.so.
    cuda_arch: GPU architectures, e.g. ("80", "90") for A100 and H100.
    jobs: compilers run at once.
    """
    tools = toolchain(tensorrt_include, nvcc, cxx)
    nvinfer = find_tensorrt_library(tensorrt_lib) if static_registration else None
    output_dir = Path(output_dir)
    objects = compile_plugin_objects(output_dir / "obj", tools.tensorrt_include, cuda_arch,
                                     static_registration=static_registration, extra_cxx_flags=extra_cxx_flags,
                                     jobs=jobs, nvcc=tools.nvcc, cxx=tools.cxx, verbose=verbose)
    library = output_dir / (STATIC_LIBRARY_NAME if static_registration else LIBRARY_NAME)
    tmp = library.with_name(library.name + ".tmp")
    try:
        _run(link_command(tmp, objects, tools, nvinfer), f"linking {library.name}", verbose)
        os.replace(tmp, library)
    finally:
        tmp.unlink(missing_ok=True)
    return library


def main(argv: Sequence[str] | None = None) -> int:
    """python -m lmt_fast.export.plugin_build OUTPUT_DIR [--tensorrt-include DIR] [--arch 80 --arch 90] ..."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m lmt_fast.export.plugin_build", description=__doc__.splitlines()[0])
    p.add_argument("output_dir", help=f"where {LIBRARY_NAME} (and obj/) go")
    p.add_argument("--tensorrt-include", metavar="DIR", help="TensorRT include directory (NvInferRuntime.h)")
    p.add_argument("--tensorrt-lib", metavar="DIR", help="directory with libnvinfer.so (--static-registration only)")
    p.add_argument("--arch", action="append", metavar="SM", help="CUDA architecture, repeatable (default: 80, 90)")
    p.add_argument("--static-registration", action="store_true",
                   help="register while loading (trtexec --staticPlugins); links libnvinfer")
    p.add_argument("--jobs", type=int, default=1, help="compilers run at once (default 1)")
    p.add_argument("--verbose", action="store_true", help="print the compiler commands")
    args = p.parse_args(argv)
    try:
        library = build_plugin(args.output_dir, args.tensorrt_include, args.tensorrt_lib,
                               tuple(args.arch) if args.arch else DEFAULT_ARCHS,
                               static_registration=args.static_registration, jobs=args.jobs, verbose=args.verbose)
    except PluginBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(library)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
