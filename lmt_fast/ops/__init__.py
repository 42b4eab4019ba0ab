"""lmt_fast.ops: mask-weighted feature statistics and mask-gated renormalisation.

Each op checks its arguments once (with the checks in ``reference``, so every backend reports bad input
the same way), resolves ``backend`` for x's device and dtype, and calls that backend's implementation.
The semantics of every op are those of ``lmt_fast.ops.reference``; the docstrings below are its.
"""

from . import reference
from .dispatch import available_backends, implementation, register_backend, resolve_backend

__all__ = [
    "masked_moments",
    "region_adain",
    "highway_adain",
    "instance_norm",
    "layer_norm",
    "available_backends",
    "resolve_backend",
    "register_backend",
]

_BACKEND_DOC = """
    Backend:
        backend: "auto" (the fastest registered backend able to run this call on x's device and
            dtype, and differentiable when an input requires grad) or a name from
            ``available_backends()``. An unknown or unusable name raises ValueError.
"""


def _spec_doc(spec):
    """Give the public op the reference docstring plus the backend argument."""

    def attach(public):
        public.__doc__ = spec.__doc__.rstrip() + "\n" + _BACKEND_DOC
        return public

    return attach


@_spec_doc(reference.masked_moments)
def masked_moments(x, masks, eps=1e-5, backend="auto"):
    reference.check_masked_moments_args(x, masks, eps)
    return implementation("masked_moments", backend, x, masks)(x, masks, eps)


@_spec_doc(reference.region_adain)
def region_adain(
    x, masks, gamma, beta, stats="global", eps=1e-5, activation=None, residual=None, backend="auto"
):
    reference.check_region_adain_args(x, masks, gamma, beta, stats, eps, activation, residual)
    impl = implementation("region_adain", backend, x, masks, gamma, beta, residual)
    return impl(x, masks, gamma, beta, stats, eps, activation, residual)


@_spec_doc(reference.highway_adain)
def highway_adain(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps=1e-5, backend="auto"):
    reference.check_highway_adain_args(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)
    impl = implementation("highway_adain", backend, x, mask, gamma_f, beta_f, gamma_b, beta_b)
    return impl(x, mask, gamma_f, beta_f, gamma_b, beta_b, eps)


@_spec_doc(reference.instance_norm)
def instance_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, backend="auto"):
    reference.check_norm_args(x, weight, bias, eps, activation, residual)
    impl = implementation("instance_norm", backend, x, weight, bias, residual)
    return impl(x, weight, bias, eps, activation, residual)


@_spec_doc(reference.layer_norm)
def layer_norm(x, weight=None, bias=None, eps=1e-5, activation=None, residual=None, backend="auto"):
    reference.check_norm_args(x, weight, bias, eps, activation, residual)
    impl = implementation("layer_norm", backend, x, weight, bias, residual)
    return impl(x, weight, bias, eps, activation, residual)


def _load_backends():
    from .backends import load_optional_backends

    load_optional_backends()


_load_backends()
