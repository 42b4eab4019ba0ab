"""The accuracy rule every fast path of the op family is held to (CUDA on a GPU, CUDA emulated, Triton).

As flash-attention's tests: the kernel's max error against the float64 reference is at most twice the
reference's own error when run in the input's dtype, plus an atol of about one unit in the last place of
the output dtype, scaled to the output's magnitude.
"""
from __future__ import annotations

import torch

from lmt_fast.ops import reference

REL_ATOL = {torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
MOMENTS_REL_ATOL = 2e-5  # statistics are float32 for every input dtype


def to64(value):
    return value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def run_references(op, *args, **kwargs):
    """(float64 reference, reference in the inputs' own dtypes)."""
    spec = getattr(reference, op)
    exact = spec(*[to64(a) for a in args], **{k: to64(v) for k, v in kwargs.items()})
    same = spec(*args, **kwargs)
    return exact, same


def assert_close_to_spec(out, exact, same, rel_atol, what=""):
    assert torch.isfinite(out).all(), f"{what}: non-finite values in the output (an unwritten element?)"
    err = (out.double() - exact.double()).abs().max().item()
    ref_err = (same.double() - exact.double()).abs().max().item()
    atol = rel_atol * max(1.0, exact.abs().max().item())
    assert err <= 2 * ref_err + atol, (
        f"{what}: max error {err:.3g} > 2 x reference-in-same-dtype error {ref_err:.3g} + atol {atol:.3g}")
