"""Build script for lmt_fast and lmt_train (one repository, two packages).

`lmt_fast._C` is built here once kernel sources exist under csrc/:
  - the CPU part (csrc/cpu + csrc/torch bindings) always, when sources are present;
  - the CUDA part (csrc/cuda) when PyTorch has CUDA and nvcc is found.
Environment switches:
  LMT_FAST_BUILD_CUDA=0/1   force the CUDA part off / on (on fails loudly if it cannot be built)
  LMT_FAST_BUILD_EXT=0      build no extension at all (pure Python install)
  TORCH_CUDA_ARCH_LIST      CUDA architectures (default "8.0;9.0")
A missing extension never breaks `import lmt_fast`: the ops fall back to Triton or the reference.

The TensorRT plugin (csrc/trt -> liblmt_trt_plugin.so, for `lmt-fast export --custom-ops` engines) is not
built here: it needs TensorRT's C++ headers rather than PyTorch, so it is built on demand from a source
checkout with `lmt-fast build-plugin` (lmt_fast/export/plugin_build.py) or with CMake (csrc/trt/CMakeLists.txt).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _flag(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value == "" else value


def _sources(*folders: str, suffixes=(".cpp",)) -> list[str]:
    found = []
    for folder in folders:
        base = CSRC / folder
        if base.is_dir():
            found += sorted(str(p.relative_to(ROOT)) for p in base.rglob("*") if p.suffix in suffixes)
    return found


def _want_cuda() -> bool:
    forced = _flag("LMT_FAST_BUILD_CUDA")
    if forced is not None:
        return forced == "1"
    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is not None and shutil.which("nvcc") is not None


def extension_modules() -> tuple[list, dict]:
    """The lmt_fast._C extension, or nothing when there is nothing to build.

    CPU part: csrc/cpu (torch-free kernels) + csrc/torch (schemas, CPU binding, module stub). The CUDA part
    adds csrc/cuda (torch-free .cu) + csrc/torch_cuda (their torch glue). No -march: the wheel must run on
    any x86-64; the kernels are written to auto-vectorise at the baseline ISA.
    """
    if _flag("LMT_FAST_BUILD_EXT") == "0":
        return [], {}
    cpu_sources = _sources("cpu", "torch")
    if not cpu_sources:  # no kernels written yet: a pure-Python package
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension, library_paths

    include = [str(CSRC / "include")]
    # C++20 is what torch's own headers (and cpp_extension's default) expect; the kernels are plain C++17.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno"]
    # `import lmt_fast` loads _C before anything imports torch, so the library must find libtorch (and
    # torch's own libgomp, the OpenMP runtime torch.set_num_threads controls) without torch's help.
    link_flags = ["-fopenmp"] + [f"-Wl,-rpath,{path}" for path in library_paths()]
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        ext = CUDAExtension(
            "lmt_fast._C", cpu_sources + _sources("cuda", "torch_cuda", suffixes=(".cu", ".cpp")),
            include_dirs=include, define_macros=[("LMT_FAST_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17", "--use_fast_math"]},
            extra_link_args=link_flags)
    else:
        ext = CppExtension("lmt_fast._C", cpu_sources, include_dirs=include,
                           extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    return [ext], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = extension_modules()

setup(
    name="lmt_fast",
    version="0.1.0",
    description="Exemplar-guided local image translation (LOMIT, MGST): fused kernels, Translator, "
                "ONNX/TensorRT export, and the lmt_train trainer",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["lmt_fast", "lmt_fast.*", "lmt_train", "lmt_train.*"]),
    package_data={"lmt_fast": ["assets/**/*", "export/*.json"]},
    include_package_data=True,
    install_requires=["torch>=2.4", "numpy", "pillow", "safetensors"],
    extras_require={
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript"],
        "train": ["tqdm", "tensorboard", "scikit-image"],
        "triton": ["triton>=3.0"],
        "trt": ["tensorrt", "cuda-python"],
        # what the test suite uses (CI adds the triton extra to run the kernels in the interpreter)
        "dev": ["pytest>=7", "tqdm", "tensorboard", "scikit-image", "onnx>=1.16", "onnxruntime>=1.18", "onnxscript"],
    },
    entry_points={"console_scripts": ["lmt-fast=lmt_fast.cli:main", "lmt-train=lmt_train.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
