"""The "cpu" backend: the C++ kernels of csrc/cpu, called as ``torch.ops.lmt.*`` from ``lmt_fast._C``.

One sweep over x gathers the statistics of a row (NCHW) or channel block (channels_last) while it stays
in cache, a second sweep writes y with the whole epilogue fused (region mix, activation, residual); both
layouts are read in place, and float32/float64/bfloat16/float16 storage is supported with float32
statistics (float64 for float64). Gradients and fake kernels come from ``lmt_fast.ops.library``.

Importing this module raises ModuleNotFoundError/ImportError when the extension is missing or was built
without the CPU kernels; ``lmt_fast.ops.backends`` then reports the backend unavailable with that reason.
"""

from __future__ import annotations

from . import library
from .dispatch import register_backend

if not library.has_kernel("CPU"):
    raise ImportError("lmt_fast._C was built without CPU kernels for torch.ops.lmt; rebuild the extension")

IMPLS = library.IMPLS

register_backend("cpu", IMPLS, devices=("cpu",), dtypes=library.DTYPES, differentiable=True)
