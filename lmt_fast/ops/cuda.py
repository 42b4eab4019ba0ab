"""The "cuda" backend: the CUDA kernels of csrc/cuda, called as ``torch.ops.lmt.*`` from ``lmt_fast._C``.

NCHW rows (one (n, c) plane) that fit on chip run in one pass (x read once, y written once); few or long
rows, layer norm and channels_last inputs run a split pipeline (partial statistics per tile, an exact
combine, an elementwise apply). float32/float16/bfloat16 storage, float32 statistics, both layouts read in
place, activation and residual fused. See csrc/cuda/api.cu for the launch heuristic; the environment
variable ``LMT_FAST_CUDA_FORCE_PATH=onepass|split`` overrides it (tests, benchmarks).

The Python half of the schema contract (masks resized as the spec does, activation codes), the fake
kernels and autograd are shared with the CPU backend in ``lmt_fast.ops.library`` and registered once
per process, whichever backend imports it first. Gradients are the reference's (the backward recomputes
the forward through ``reference.*_impl``).

Importing this module raises ImportError, with the reason, when the extension is missing or was built
without CUDA kernels; ``lmt_fast.ops.backends`` then reports the backend unavailable.
"""

from __future__ import annotations

import torch

from lmt_fast import _extension

from .dispatch import register_backend

FORCE_PATH_ENV = "LMT_FAST_CUDA_FORCE_PATH"
PATHS = ("auto", "onepass", "split")

# Storage dtypes the CUDA kernels read and write; float64 stays on the reference backend.
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _why_unavailable():
    if _extension.extension is None:
        return f"lmt_fast._C is not loaded ({_extension.unavailable_reason})"
    try:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("lmt::region_adain", "CUDA")
    except RuntimeError:  # the op library itself is missing from this build
        return "lmt_fast._C does not define the torch.ops.lmt ops; rebuild it"
    if not has_cuda:
        if torch.version.cuda is None:
            return f"PyTorch {torch.__version__} is a CPU-only build, so lmt_fast._C has no CUDA kernels"
        return ("lmt_fast._C was built without CUDA kernels; rebuild it with nvcc on PATH "
                "(pip install --no-build-isolation -e .; LMT_FAST_BUILD_CUDA=1 makes a failed CUDA build an error)")
    return None


_reason = _why_unavailable()
if _reason is not None:
    raise ImportError(f"the CUDA backend is unavailable: {_reason}")

from . import library  # noqa: E402  (fake kernels + autograd, registered once for every device)

if not library.has_kernel("CUDA"):
    raise ImportError("the CUDA backend is unavailable: lmt_fast._C lacks CUDA kernels for some torch.ops.lmt ops")

IMPLS = library.IMPLS

register_backend("cuda", IMPLS, devices=("cuda",), dtypes=DTYPES, differentiable=True)
