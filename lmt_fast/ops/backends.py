"""Loads the optional fast backends; each registers itself with `dispatch.register_backend` on import.

A backend that cannot load (no compiled extension, no triton, no GPU) is skipped, and the reason is kept
in `unavailable` for `lmt-fast info`. Nothing here ever raises.
"""
from __future__ import annotations

import importlib

# module -> backend names it may register
OPTIONAL_BACKENDS = {
    "lmt_fast.ops.cpu": ("cpu",),          # csrc/cpu through lmt_fast._C (torch.ops.lmt)
    "lmt_fast.ops.cuda": ("cuda",),        # csrc/cuda through lmt_fast._C (torch.ops.lmt), CUDA builds only
    "lmt_fast.ops.triton": ("triton",),    # lmt_fast/ops/triton, needs triton and a GPU
}

unavailable: dict[str, str] = {}


def load_optional_backends() -> None:
    for module, names in OPTIONAL_BACKENDS.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # the backend module itself is not written yet
                reason = "not implemented in this version"
            else:
                reason = f"{exc.name} is not installed ({exc})"
            for name in names:
                unavailable[name] = reason
        except Exception as exc:  # a backend must never break `import lmt_fast.ops`
            for name in names:
                unavailable[name] = f"failed to load: {type(exc).__name__}: {exc}"
