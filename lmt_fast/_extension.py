"""Loads the compiled extension `lmt_fast._C` if it was built; never fails the import of lmt_fast.

A missing extension is normal (a pure-Python install, or a machine without a compiler): the op family
then runs on Triton or the PyTorch reference. A present but broken one is reported once, with its cause.
"""
from __future__ import annotations

import importlib
import os
import warnings

_SKIP_ENV = "LMT_FAST_SKIP_EXTENSION"

extension = None
unavailable_reason: str | None = None


def _load() -> None:
    global extension, unavailable_reason
    if os.environ.get(_SKIP_ENV, "") not in ("", "0"):
        unavailable_reason = f"disabled by {_SKIP_ENV}"
        return
    try:
        extension = importlib.import_module("lmt_fast._C")
    except ModuleNotFoundError as exc:
        if exc.name != "lmt_fast._C":
            unavailable_reason = f"lmt_fast._C failed to load: {exc}"
            warnings.warn(f"lmt_fast: compiled kernels unavailable ({unavailable_reason}); "
                          "falling back to Triton / reference ops", RuntimeWarning, stacklevel=3)
        else:
            unavailable_reason = "lmt_fast._C is not built (no C++/CUDA sources compiled in this install)"
    except (ImportError, OSError) as exc:
        unavailable_reason = f"lmt_fast._C failed to load: {exc}"
        warnings.warn(f"lmt_fast: compiled kernels unavailable ({unavailable_reason}); "
                      "falling back to Triton / reference ops", RuntimeWarning, stacklevel=3)


_load()
