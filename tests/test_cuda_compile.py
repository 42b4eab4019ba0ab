"""The CUDA sources build on a machine without a GPU: every csrc/cuda/*.cu compiles with nvcc for sm_80 and
sm_90 without warnings, the torch-free C API header is valid C and C++, and (where PyTorch's headers are
at hand) the torch glue in csrc/torch_cuda parses.

Skipped with a reason where nvcc (or a host compiler) is missing. Runtime behaviour of the kernels is
tested on the CPU through the CUDA emulator by tests/test_cuda_emulated.py, and on a GPU by
tests/test_ops_cuda.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CUDA_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
NVCC_FLAGS = ["-c", "-std=c++17", "-O2", "-gencode", "arch=compute_80,code=sm_80",
              "-gencode", "arch=compute_90,code=sm_90", "-I", str(CSRC / "include")]
COMPILE_TIMEOUT_S = 300


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").is_file():
            return str(Path(candidate) / "bin" / "nvcc")
    return None


NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")


def cuda_include_dir() -> Path:
    """The toolkit's include directory (nvcc may be a wrapper script outside the toolkit)."""
    candidates = [Path(NVCC).resolve().parents[1], os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    pytest.skip("CUDA toolkit headers (cuda_runtime_api.h) not found next to nvcc, in $CUDA_HOME or /usr/local/cuda")


def our_warnings(output: str) -> list[str]:
    """Warning lines about our own sources (toolkit headers are not ours to fix)."""
    return [line for line in output.splitlines()
            if "warning" in line.lower() and ("csrc/" in line or "csrc\\" in line)]


def compile_cu(source: Path, out_dir: Path) -> tuple[Path, int, str]:
    cmd = [NVCC, *NVCC_FLAGS, str(source), "-o", str(out_dir / (source.stem + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, cwd=ROOT)
    return source, proc.returncode, proc.stdout + proc.stderr


@needs_nvcc
def test_every_cuda_source_compiles_without_warnings(tmp_path):
    assert CUDA_SOURCES, "no csrc/cuda/*.cu found"
    # Two at a time (CI machines have 2 cores). onepass.cu holds half the kernel instantiations (about
    # half the compile time), so it starts first and the other worker takes the rest.
    ordered = sorted(CUDA_SOURCES, key=lambda p: p.name != "onepass.cu")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: compile_cu(s, tmp_path), ordered))
    failed = [f"{src.name} (exit {rc}):\n{out}" for src, rc, out in results if rc != 0]
    assert not failed, "nvcc failed:\n" + "\n".join(failed)
    warned = [f"{src.name}:\n" + "\n".join(our_warnings(out)) for src, _, out in results if our_warnings(out)]
    assert not warned, "nvcc warnings in our sources:\n" + "\n".join(warned)
    for src in CUDA_SOURCES:
        assert (tmp_path / (src.stem + ".o")).stat().st_size > 0


def test_cuda_sources_are_torch_free():
    """csrc/cuda is shared with the TensorRT plugin and must build without PyTorch (DESIGN.md section 7)."""
    for path in sorted((CSRC / "cuda").iterdir()) + [CSRC / "include" / "lmt" / "cuda_kernels.h"]:
        text = path.read_text()
        for banned in ("#include <ATen", "#include <torch", "#include <c10", "#include <pybind11"):
            assert banned not in text, f"{path.relative_to(ROOT)} includes {banned[10:]} headers"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="gcc/g++ not found")
@needs_nvcc
@pytest.mark.parametrize("language,compiler,std", [("c", "gcc", "-std=c99"), ("c++", "g++", "-std=c++17")])
def test_c_api_header_is_plain_c_and_cxx(tmp_path, language, compiler, std):
    source = tmp_path / "use_header.txt"
    source.write_text(
        '#include "lmt/cuda_kernels.h"\n'
        "int main(void) {\n"
        "  size_t bytes = lmt_cuda_workspace_size(LMT_OP_REGION_ADAIN, LMT_DTYPE_F16, LMT_LAYOUT_NHWC,\n"
        "                                         1, 64, 32, 32, 2);\n"
        "  cudaError_t (*launch)(const void*, void*, lmt_dtype, lmt_layout, int64_t, int64_t, int64_t,\n"
        "                        int64_t, const float*, const float*, float, lmt_activation, const void*,\n"
        "                        lmt_dtype, void*, size_t, lmt_path, cudaStream_t) = lmt_cuda_layer_norm;\n"
        "  (void)launch;\n"
        "  return bytes > 0 ? 0 : 1;\n"
        "}\n")
    cmd = [compiler, "-x", language, std, "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
           "-I", str(CSRC / "include"), "-isystem", str(cuda_include_dir()), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def torch_include_dirs() -> list[Path] | None:
    try:
        import torch.utils.cpp_extension as cpp_extension
    except ImportError:
        return None
    dirs = [Path(d) for d in cpp_extension.include_paths()]
    return dirs if (dirs and (dirs[0] / "c10" / "cuda" / "CUDAGuard.h").is_file()) else None


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
@needs_nvcc
def test_torch_cuda_glue_parses(tmp_path):
    """csrc/torch_cuda is only compiled where PyTorch has CUDA; here it is at least parsed.

    A CPU-only PyTorch ships c10's CUDA headers but not their generated config header, which
    C10_CUDA_NO_CMAKE_CONFIGURE_FILE skips (it only sets export macros).
    """
    includes = torch_include_dirs()
    if includes is None:
        pytest.skip("PyTorch C++ headers (with c10/cuda) not found")
    flags = ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",
             "-I", str(CSRC / "include"), "-isystem", str(cuda_include_dir())]
    for d in includes:
        flags += ["-isystem", str(d)]
    for source in sorted((CSRC / "torch_cuda").glob("*.cpp")):
        proc = subprocess.run(["g++", *flags, str(source)], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        assert proc.returncode == 0, f"{source.name}:\n{proc.stdout}{proc.stderr}"
