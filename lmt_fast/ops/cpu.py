"""The "cpu" backend: the C++ kernels of csrc/cpu, called as ``torch.ops.lmt.*`` from ``lmt_fast._C``.

One sweep over x gathers the statistics of a slice (an NCHW row; in channels_last a run of whole pixels)
from memory, a second sweep over the same slice, still in cache, writes y with the whole epilogue fused
(region mix, activation, residual). Both layouts are read in place; float32/float64/bfloat16/float16
storage, statistics in float32 (float64 for float64); OpenMP over slices. Gradients, fake kernels and
the Python half of the schema contract come from ``lmt_fast.ops.library``.

Importing this module raises ImportError, with the reason, when the extension is missing or was built
without the CPU kernels; ``lmt_fast.ops.backends`` then reports the backend unavailable.
"""

from __future__ import annotations

from . import library
from .dispatch import register_backend

if not library.has_kernel("CPU"):
    raise ImportError("lmt_fast._C was built without CPU kernels for torch.ops.lmt; rebuild the extension")

IMPLS = library.IMPLS

register_backend("cpu", IMPLS, devices=("cpu",), dtypes=library.DTYPES, differentiable=True)
