"""TensorRT optimization profiles: a (min, opt, max) shape per input, checked against the I/O contract.

Plain Python (no tensorrt): the builder (lmt_fast.export.tensorrt) and the runner
(lmt_fast.runtime.tensorrt) share it, and it is tested without a GPU.

Command-line form, one per input: ``NAME:MIN:OPT:MAX`` with shapes written ``1x3x128x128``, e.g.
``--profile input:1x3x128x128:4x3x256x256:8x3x512x512``. Inputs without one get their ranges from the
sizes they share with given ones (the contract's symbols): ``exemplar`` follows ``input``'s batch and
size, masks follow the image size, ``exemplar_attention`` / ``exemplar_style`` the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from lmt_fast.export.contract import BATCH, HEIGHT, WIDTH, ContractError, IOContract

DEFAULT_MAX_BATCH = 8
# A mask input without a range of its own covers the image's range (masks are usually image-sized).
_MASK_FALLBACK = {"height": HEIGHT, "width": WIDTH}


@dataclass(frozen=True)
class ShapeRange:
    min: tuple
    opt: tuple
    max: tuple

    def covers(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def text(self) -> str:
        return ":".join(format_shape(s) for s in (self.min, self.opt, self.max))


@dataclass(frozen=True)
class Profile:
    """One optimization profile: a ShapeRange for every input of the graph."""

    ranges: Mapping[str, ShapeRange]

    def covers(self, shapes: Mapping[str, Sequence[int]]) -> bool:
        return all(name in self.ranges and self.ranges[name].covers(shape) for name, shape in shapes.items())

    def text(self) -> str:
        return " ".join(f"{name}:{r.text()}" for name, r in self.ranges.items())

    def trtexec_shapes(self) -> dict:
        """{"--minShapes": "input:1x3x64x64,exemplar:...", "--optShapes": ..., "--maxShapes": ...}"""
        return {flag: ",".join(f"{name}:{format_shape(getattr(r, which))}" for name, r in self.ranges.items())
                for flag, which in (("--minShapes", "min"), ("--optShapes", "opt"), ("--maxShapes", "max"))}


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def parse_shape(text: str, what: str = "shape") -> tuple:
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise ContractError(f"{what} {text!r} is not a shape like 1x3x128x128") from None
    if not shape or min(shape) < 1:
        raise ContractError(f"{what} {text!r} must have sizes >= 1")
    return shape


def parse_profile_arg(text: str) -> tuple[str, ShapeRange]:
    """'input:1x3x64x64:2x3x128x128:4x3x256x256' -> ('input', ShapeRange(...))."""
    parts = text.split(":")
    if len(parts) != 4 or not parts[0]:
        raise ContractError(f"profile {text!r} must be NAME:MIN:OPT:MAX, "
                            "e.g. input:1x3x128x128:4x3x128x128:8x3x256x256")
    name = parts[0]
    shapes = [parse_shape(p, f"{name} {which}") for p, which in zip(parts[1:], ("min", "opt", "max"))]
    return name, ShapeRange(*shapes)


def build_profile(contract: IOContract, entries: Sequence[str] | Mapping[str, ShapeRange] = (),
                  default_size: int | None = None, max_batch: int = DEFAULT_MAX_BATCH) -> Profile:
    """A profile for every input of `contract`, from the given entries plus defaults.

    Without any entry: batch 1..max_batch (opt 1) at default_size x default_size (the model's training
    size). Raises ContractError naming every problem: unknown names, wrong ranks or fixed sizes,
    min > opt > max, image sides that are not multiples of size_multiple, two inputs that disagree on a
    shared size (input and exemplar of a paired graph), or an input whose range cannot be derived.
    """
    given = dict(entries) if isinstance(entries, Mapping) else dict(parse_profile_arg(e) for e in entries)
    problems = []
    unknown = sorted(set(given) - set(contract.input_names))
    if unknown:
        problems.append(f"no input(s) {unknown} in this graph (inputs: {contract.input_names})")
    symbols: dict[str, tuple] = {}
    owner: dict[str, str] = {}
    for spec in contract.inputs:
        if spec.name not in given:
            continue
        r = given[spec.name]
        if not len(r.min) == len(r.opt) == len(r.max) == spec.rank:
            problems.append(f"{spec.name} needs rank-{spec.rank} shapes {spec.shape_text()}, got {r.text()}")
            continue
        for axis, want in enumerate(spec.dims):
            lo, opt, hi = r.min[axis], r.opt[axis], r.max[axis]
            if isinstance(want, int):
                if (lo, opt, hi) != (want, want, want):
                    problems.append(f"{spec.name} axis {axis} is fixed at {want}, got {lo}:{opt}:{hi}")
                continue
            if not lo <= opt <= hi:
                problems.append(f"{spec.name} axis {axis} ({want}) needs min <= opt <= max, got {lo}:{opt}:{hi}")
            if want in symbols and symbols[want] != (lo, opt, hi):
                problems.append(f"{spec.name} axis {axis} ({want}) ranges {lo}:{opt}:{hi} but {owner[want]} "
                                f"has {':'.join(map(str, symbols[want]))}; they must agree")
            symbols.setdefault(want, (lo, opt, hi))
            owner.setdefault(want, spec.name)
    k = contract.dims.size_multiple
    for side in (HEIGHT, WIDTH):
        if side in symbols and any(v % k for v in symbols[side]):
            problems.append(f"{side} range {':'.join(map(str, symbols[side]))} (from {owner[side]}) must use "
                            f"multiples of {k}")
    if not given and default_size is not None:
        symbols = {BATCH: (1, 1, max_batch), HEIGHT: (default_size,) * 3, WIDTH: (default_size,) * 3}
    ranges = {}
    for spec in contract.inputs:
        if spec.name in given:
            ranges[spec.name] = given[spec.name]
            continue
        axes = []
        for want in spec.dims:
            if isinstance(want, int):
                axes.append((want,) * 3)
            else:
                fallback = _MASK_FALLBACK.get(want.rsplit("_", 1)[-1]) if "_mask_" in want else None
                axes.append(symbols.get(want) or symbols.get(fallback))
        if any(a is None for a in axes):
            missing = [d for d, a in zip(spec.dims, axes) if a is None]
            problems.append(f"no range for {spec.name} {spec.shape_text()} (unknown: {missing}); give "
                            f"--profile {spec.name}:MIN:OPT:MAX")
            continue
        ranges[spec.name] = ShapeRange(*(tuple(a[i] for a in axes) for i in range(3)))
    if problems:
        raise ContractError("optimization profile: " + "; ".join(problems))
    return Profile(ranges)


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Sequence[int]]) -> int:
    """Index of the first profile covering every input shape; ContractError naming the shapes otherwise."""
    for index, profile in enumerate(profiles):
        if profile.covers(shapes):
            return index
    asked = ", ".join(f"{name} {format_shape(s)}" for name, s in shapes.items())
    ranges = "; ".join(f"profile {i}: {p.text()}" for i, p in enumerate(profiles)) or "none"
    raise ContractError(f"no optimization profile of the engine covers {asked} ({ranges}); "
                        "rebuild the engine with a --profile that includes these shapes")
