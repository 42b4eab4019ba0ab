"""A tiny backend registry: which implementation of each op runs for a given tensor.

A backend is a name plus a table ``{op_name: callable}`` (or a module with functions of those names).
Each callable takes the public op's arguments minus ``backend``, in the same order and with the same
keywords, and receives arguments already checked by ``lmt_fast.ops``. A backend may implement only
some ops; "auto" then falls back to the next backend for the others.

A kernel plugs in with one call, usually at the end of its module::

    register_backend("cpu", {"region_adain": region_adain_cpu, ...}, devices=("cpu",),
                     dtypes=(torch.float32, torch.float16, torch.bfloat16))

"auto" picks, among backends that implement the op, support the tensor's device type and dtype, and
(when gradients are needed) are differentiable, the one with the highest priority. Default priorities
follow speed: cuda > triton > cpu > reference.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Union

import torch

from . import reference

OPS = ("masked_moments", "region_adain", "highway_adain", "instance_norm", "layer_norm")

DEFAULT_PRIORITY = {"cuda": 300, "triton": 200, "cpu": 100, "reference": 0}

DeviceLike = Union[torch.device, str, None]


@dataclass(frozen=True)
class Backend:
    name: str
    impls: Mapping[str, Callable]
    devices: Optional[frozenset]  # device types ("cpu", "cuda", ...); None = any device
    dtypes: Optional[frozenset]  # x dtypes accepted; None = any floating dtype
    priority: int
    differentiable: bool  # True if autograd through the impls gives correct gradients

    def supports_device(self, device_type: Optional[str]) -> bool:
        return self.devices is None or device_type is None or device_type in self.devices

    def supports_dtype(self, dtype: Optional[torch.dtype]) -> bool:
        return self.dtypes is None or dtype is None or dtype in self.dtypes

    def why_not(self, op, device_type, dtype, requires_grad) -> Optional[str]:
        """Reason this backend cannot run the call, or None if it can."""
        if op is not None and op not in self.impls:
            return f"does not implement {op!r} (it implements {sorted(self.impls)})"
        if not self.supports_device(device_type):
            return f"does not support device type {device_type!r} (it supports {sorted(self.devices)})"
        if not self.supports_dtype(dtype):
            return f"does not support dtype {dtype} (it supports {sorted(map(str, self.dtypes))})"
        if requires_grad and not self.differentiable:
            return "is not differentiable and gradients are required"
        return None


_REGISTRY: dict = {}


def _impl_table(module_or_impl_table) -> dict:
    if isinstance(module_or_impl_table, types.ModuleType):
        table = {op: getattr(module_or_impl_table, op) for op in OPS if hasattr(module_or_impl_table, op)}
    elif isinstance(module_or_impl_table, Mapping):
        table = dict(module_or_impl_table)
    else:
        raise TypeError(
            f"module_or_impl_table must be a module or a mapping, got {type(module_or_impl_table).__name__}"
        )
    unknown = sorted(set(table) - set(OPS))
    if unknown:
        raise ValueError(f"unknown op name(s) {unknown}; ops are {list(OPS)}")
    if not table:
        raise ValueError(f"backend implements none of the ops {list(OPS)}")
    for op, fn in table.items():
        if not callable(fn):
            raise TypeError(f"implementation of {op!r} is not callable: {fn!r}")
    return table


def register_backend(
    name: str,
    module_or_impl_table,
    devices: Optional[Iterable[str]] = None,
    priority: Optional[int] = None,
    *,
    dtypes: Optional[Iterable[torch.dtype]] = None,
    differentiable: bool = False,
    replace: bool = False,
) -> Backend:
    """Register (or with ``replace=True`` re-register) a backend; returns its record.

    Args:
        name: backend name users pass as ``backend=...``; "auto" is reserved.
        module_or_impl_table: ``{op_name: callable}`` or a module defining functions named after ops.
        devices: device types it runs on, e.g. ("cuda",); None means any device.
        priority: higher wins under "auto"; defaults to DEFAULT_PRIORITY[name], else 50.
        dtypes: x dtypes it accepts; None means any floating dtype.
        differentiable: whether autograd through it is correct; "auto" skips non-differentiable
            backends when an input requires grad and grad mode is on.
        replace: allow overwriting an existing registration.
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"backend name must be a non-empty string other than 'auto', got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered; pass replace=True to overwrite it")
    if priority is None:
        priority = DEFAULT_PRIORITY.get(name, 50)
    backend = Backend(
        name=name,
        impls=types.MappingProxyType(_impl_table(module_or_impl_table)),
        devices=None if devices is None else frozenset(devices),
        dtypes=None if dtypes is None else frozenset(dtypes),
        priority=int(priority),
        differentiable=bool(differentiable),
    )
    _REGISTRY[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Remove a backend (for tests and for a kernel that fails its self-check at load time)."""
    if name == "reference":
        raise ValueError("the 'reference' backend cannot be unregistered; it is the fallback for every op")
    _REGISTRY.pop(name, None)


def _device_type(device: DeviceLike) -> Optional[str]:
    if device is None:
        return None
    return torch.device(device).type


def _by_priority() -> list:
    return sorted(_REGISTRY.values(), key=lambda b: (-b.priority, b.name))


def available_backends(device: DeviceLike = None) -> list:
    """Registered backend names, fastest first; with ``device``, only those that run on it."""
    device_type = _device_type(device)
    return [b.name for b in _by_priority() if b.supports_device(device_type)]


def resolve_backend(
    name: str,
    device: DeviceLike = None,
    *,
    op: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    requires_grad: bool = False,
) -> str:
    """Turn a requested backend name into the registered backend that will run.

    "auto" picks the highest-priority backend that can run ``op`` (any op if None) on ``device``'s type
    with ``dtype`` (and, if ``requires_grad``, is differentiable). An explicit name must be registered
    and able to run the call. Otherwise ValueError, naming the backend and what is available.
    """
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {list(OPS)}")
    device_type = _device_type(device)
    if name == "auto":
        for backend in _by_priority():
            if backend.why_not(op, device_type, dtype, requires_grad) is None:
                return backend.name
        raise ValueError(
            f"no registered backend can run op={op!r} on device type {device_type!r} with dtype {dtype}; "
            f"registered: {available_backends()}"
        )
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; available backends: {available_backends()} or 'auto'")
    reason = _REGISTRY[name].why_not(op, device_type, dtype, requires_grad)
    if reason is not None:
        usable = [
            b.name for b in _by_priority() if b.why_not(op, device_type, dtype, requires_grad) is None
        ]
        raise ValueError(f"backend {name!r} is unavailable here: it {reason}; usable instead: {usable}")
    return name


_grad_enabled = torch.is_grad_enabled
_any_requires_grad = torch._C._any_requires_grad  # what torch.library's autograd wrapper asks too


def needs_grad(tensors) -> bool:
    """Whether autograd records a call with these inputs (None and non-tensors are skipped)."""
    return _grad_enabled() and _any_requires_grad(*tensors)


# implementation() runs on every op call, and resolving a backend takes microseconds, as long as a small
# kernel: its answers are kept per (op, backend, device, dtype) and valid for as long as the registry holds
# the same Backend records. They are compared on each call (a tuple of a few references), so the cache
# also notices a registry edited in place or swapped (as tests do), not only register_backend.
_resolved: dict = {}
_resolved_for: tuple = ()


def implementation(op: str, backend: str, x: torch.Tensor, *tensors) -> Callable:
    """The callable that runs ``op`` for input ``x`` (``tensors``: the other inputs, for grad detection)."""
    global _resolved_for
    registered = tuple(_REGISTRY.values())
    if registered != _resolved_for:
        _resolved.clear()
        _resolved_for = registered
    key = (op, backend, x.device, x.dtype) if isinstance(backend, str) else None
    found = _resolved.get(key)
    if found is None:
        found = _resolve_ignoring_grad(op, backend, x, tensors)
        if key is not None:
            _resolved[key] = found
    impl, differentiable = found
    # The backend chosen regardless of gradients is also chosen when they are needed if it is differentiable
    # ("auto" only drops backends that are not); otherwise a call that needs them is resolved again.
    if differentiable or not needs_grad((x, *tensors)):
        return impl
    name = resolve_backend(backend, x.device, op=op, dtype=x.dtype, requires_grad=True)
    return _REGISTRY[name].impls[op]


def _resolve_ignoring_grad(op: str, backend: str, x: torch.Tensor, tensors) -> tuple:
    """(implementation, differentiable) of the backend that runs ``op`` on x when no gradient is needed."""
    try:
        name = resolve_backend(backend, x.device, op=op, dtype=x.dtype)
    except ValueError:  # raise the error this very call gets (its "usable instead" depends on gradients)
        resolve_backend(backend, x.device, op=op, dtype=x.dtype, requires_grad=needs_grad((x, *tensors)))
        raise
    record = _REGISTRY[name]
    return record.impls[op], record.differentiable


register_backend("reference", reference.IMPLS, devices=None, differentiable=True)
