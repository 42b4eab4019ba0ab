"""The Triton backend of the op family (`backend="triton"`).

Kernels: kernels.py (four kernels), _helpers.py (shared device functions), _heuristics.py (which path:
one-pass, looped or split-HW), launch.py (operands, plans, launches), ops.py (`lmt_triton::*` custom ops,
autograd), aot.py (native compile check without a GPU). On CUDA tensors the kernels run natively; on
CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported), which
is how the tests run them here.
"""
import triton  # noqa: F401  (first: without triton, lmt_fast.ops.backends marks the backend unavailable)
import torch

from ..dispatch import OPS, register_backend
from ._heuristics import Tuning, current_tuning, plan_rows, plan_samples, tuning

__all__ = ["IMPLS", "Tuning", "current_tuning", "plan_rows", "plan_samples", "tuning", *OPS]


def _deferred(name):
    """The impl of op `name`, importing ops.py on first use: defining the `lmt_triton::*` ops imports
    torch._inductor (~2 s), which `import lmt_fast.ops` should not pay where the backend is unused."""

    def impl(*args, **kwargs):
        from . import ops

        return getattr(ops, name)(*args, **kwargs)

    impl.__name__ = impl.__qualname__ = name
    impl.__doc__ = f"Triton `{name}`: the reference impl's arguments, plus the test hook `_out=`."
    return impl


IMPLS = {name: _deferred(name) for name in OPS}
masked_moments = IMPLS["masked_moments"]
region_adain = IMPLS["region_adain"]
highway_adain = IMPLS["highway_adain"]
instance_norm = IMPLS["instance_norm"]
layer_norm = IMPLS["layer_norm"]

register_backend("triton", IMPLS, devices=("cuda",),
                 dtypes=(torch.float32, torch.float16, torch.bfloat16), differentiable=True, replace=True)
