"""The I/O contract of the ONNX graphs (and TensorRT engines built from them) that lmt_fast exports.

Contract version 1. Plain Python (no torch, no onnx), so servers and the TensorRT runner can check
requests without either.

Graphs ("parts")
----------------
``full`` (``model.onnx``): ``LOMITGenerator.forward``, the paired translation.

    inputs   input           (N, 3, H, W)   image to translate, float in [-1, 1]
             exemplar        (N, 3, H, W)   exemplar, same size as the input
             input_mask_in   (N, 1, Hm, Wm) optional (--with-masks): replaces the learned input mask
             exemplar_mask_in (N, 1, He, We) optional (--with-masks): replaces the learned exemplar mask
    outputs  image           (N, 3, H, W)   the translation, float in [-1, 1]
             input_mask      (N, 1, H/s, W/s)  the mask used on the input, in [0, 1]
             exemplar_mask   (N, 1, H/s, W/s)  the mask used on the exemplar, in [0, 1]

``style_encoder`` (``style_encoder.onnx``): ``LOMITGenerator.encode_exemplar``, run once per exemplar.

    inputs   exemplar            (N, 3, H, W)
             exemplar_mask_in    (N, 1, He, We)  optional
    outputs  exemplar_attention  (N, C, 1, 1)    co-segmentation channel attention (ExemplarCode.attention)
             exemplar_mask       (N, 1, H/s, W/s)  ExemplarCode.mask
             exemplar_style      (N, S)          foreground style code (ExemplarCode.style_fg)

``translate`` (``translate.onnx``): ``LOMITGenerator.translate_encoded``.

    inputs   input               (N, 3, H, W)
             exemplar_attention  (N, C, 1, 1)    from style_encoder, repeated to the input batch
             exemplar_style      (N, S)          from style_encoder, repeated to the input batch
             input_mask_in       (N, 1, Hm, Wm)  optional
    outputs  image               (N, 3, H, W)
             input_mask          (N, 1, H/s, W/s)

Given masks are inputs named ``*_mask_in``: ONNX and TensorRT forbid an input and an output of one name,
and the outputs keep their names in every variant. (The exemplar's mask is not an output of
``translate``: it is style_encoder's output already.)

Sizes
-----
N (``batch``) is dynamic. H and W (``height``, ``width``) are dynamic multiples of the model's
``size_multiple`` (2 ** (n_downsample + style_extra_downsample): 16 for the paper model). Masks come out at
content resolution, H/s x W/s with s = ``mask_scale`` = 2 ** n_downsample (4 for the paper model): the
resolution the model computes them at, which is exact and 16x smaller than H x W; upsample them
bilinearly (align_corners=False) for display, as the Translator does. Mask inputs may have any size
(typically H x W, or content resolution, e.g. a mask output fed back); the graph resizes them bilinearly
(align_corners=False) to content resolution, as ``LOMITGenerator.forward`` does. C is the content
width (``content_dim``), S the style code length (``style_dim``).

Variants
--------
dtype   "float32" or "float16". A float16 graph is typed float16 end to end (weights, activations, and
        its float inputs and outputs) except the normalisations, which cast to float32 around their
        statistics (TensorRT 11 builds engines with exactly the precision the ONNX types say).
io      "float": the layout above. "uint8": every image-like tensor is uint8 NHWC instead; the
        conversions run inside the graph:
            input, exemplar   (N, H, W, 3) uint8 RGB;  x = u / 127.5 - 1            (float32)
            masks (inputs)    (N, Hm, Wm, 1) uint8;    m = u / 255
            image (output)    (N, H, W, 3) uint8;      u = round((clip(y, -1, 1) + 1) * 127.5)
            masks (outputs)   (N, H/s, W/s, 1) uint8;  u = round(clip(m, 0, 1) * 255)
        computed in float32 with round-half-to-even (ONNX Round, numpy.round and torch.round agree),
        the same arithmetic as lmt_fast.Translator's uint8 path. exemplar_attention and exemplar_style
        stay float (graph dtype).
custom_ops  highway AdaIN as one ``lmt::RegionAdaIN`` node (TensorRT plugin) instead of standard ops.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

CONTRACT_VERSION = 1

# Keys of the ONNX metadata_props lmt_fast writes (see lmt_fast.export.onnx.read_metadata).
CONTRACT_KEY = "lmt_fast.contract"   # JSON: {"version", "variant", "dims"}
CONFIG_KEY = "lmt_fast.config"       # JSON: LOMITConfig.to_dict()
VERSION_KEY = "lmt_fast.version"
WEIGHTS_KEY = "lmt_fast.weights_sha256"   # digest of the generator's weights (lmt_fast.export.cache.model_digest)

PARTS = ("full", "style_encoder", "translate")
MASK_ROLES = ("input", "exemplar")
DTYPES = ("float32", "float16")
IO_KINDS = ("float", "uint8")
# Which mask inputs a part can take.
PART_MASKS = {"full": ("input", "exemplar"), "style_encoder": ("exemplar",), "translate": ("input",)}
# Default file name of each part.
FILE_NAMES = {"full": "model.onnx", "style_encoder": "style_encoder.onnx", "translate": "translate.onnx"}

# Dimension symbols. Free ones are set by the inputs; derived ones follow from them.
BATCH, HEIGHT, WIDTH = "batch", "height", "width"
CONTENT_HEIGHT, CONTENT_WIDTH = "content_height", "content_width"
DERIVED = {CONTENT_HEIGHT: HEIGHT, CONTENT_WIDTH: WIDTH}  # symbol -> the one it is height / mask_scale of


class ContractError(ValueError):
    """Tensors (or an engine) that do not fit the I/O contract; the message names every problem."""


@dataclass(frozen=True)
class Variant:
    """Which graph, with which optional inputs, in which precision and I/O format."""

    part: str = "full"
    masks: tuple = ()          # subset of PART_MASKS[part]: the given masks that replace learned ones
    dtype: str = "float32"
    io: str = "float"
    custom_ops: bool = False

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        masks = (self.masks,) if isinstance(self.masks, str) else tuple(self.masks)
        allowed = PART_MASKS[self.part]
        wrong = [m for m in masks if m not in allowed]
        if wrong:
            raise ValueError(f"the {self.part!r} graph takes masks {allowed}, not {wrong}")
        object.__setattr__(self, "masks", tuple(m for m in MASK_ROLES if m in masks))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.io not in IO_KINDS:
            raise ValueError(f"io must be one of {IO_KINDS}, got {self.io!r}")
        object.__setattr__(self, "custom_ops", bool(self.custom_ops))

    @property
    def tag(self) -> str:
        """A short unique name, e.g. 'full-masks_input_exemplar-float16-uint8' (file and cache names)."""
        parts = [self.part]
        if self.masks:
            parts.append("masks_" + "_".join(self.masks))
        parts += [self.dtype] + (["uint8"] if self.io == "uint8" else []) + (["custom"] if self.custom_ops else [])
        return "-".join(parts)

    def to_dict(self) -> dict:
        return {"part": self.part, "masks": list(self.masks), "dtype": self.dtype, "io": self.io,
                "custom_ops": self.custom_ops}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Variant":
        return cls(**{k: tuple(v) if k == "masks" else v for k, v in values.items()})


@dataclass(frozen=True)
class ModelDims:
    """The model sizes the contract depends on (all derived from LOMITConfig)."""

    size_multiple: int
    mask_scale: int
    content_dim: int
    style_dim: int

    @classmethod
    def of(cls, config) -> "ModelDims":
        """From a LOMITConfig (or anything with the same attributes)."""
        return cls(int(config.size_multiple), int(config.mask_scale), int(config.content_dim), int(config.style_dim))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                 # "float32" | "float16" | "uint8"
    dims: tuple                # ints are fixed sizes; strings are dimension symbols
    layout: str                # "NCHW", "NHWC", "NC"
    doc: str = ""

    @property
    def rank(self) -> int:
        return len(self.dims)

    def shape_text(self) -> str:
        return "(" + ", ".join(str(d) for d in self.dims) + ")"


@dataclass(frozen=True)
class IOContract:
    """The inputs and outputs of one exported graph."""

    variant: Variant
    dims: ModelDims
    inputs: tuple = field(default=(), compare=False)
    outputs: tuple = field(default=(), compare=False)

    @classmethod
    def build(cls, config_or_dims, variant: Variant = Variant()) -> "IOContract":
        dims = config_or_dims if isinstance(config_or_dims, ModelDims) else ModelDims.of(config_or_dims)
        inputs, outputs = _specs(variant, dims)
        return cls(variant, dims, inputs, outputs)

    # -- names -------------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def spec(self, name: str) -> TensorSpec:
        for t in self.inputs + self.outputs:
            if t.name == name:
                return t
        raise KeyError(f"{name!r} is not a tensor of the {self.variant.part} graph; it has "
                       f"inputs {self.input_names} and outputs {self.output_names}")

    # -- checking requests -------------------------------------------------------------------------
    def resolve(self, shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, str] | None = None) -> dict:
        """Check input shapes (and dtypes) against the contract; returns the value of every symbol.

        Raises ContractError naming every problem at once: missing or unexpected inputs, a wrong rank,
        dtype or fixed size, inconsistent sizes (e.g. input and exemplar of different sizes), or image
        sides that are not multiples of size_multiple.
        """
        problems = _name_problems("input", self.input_names, shapes)
        symbols: dict[str, int] = {}
        first_seen: dict[str, str] = {}
        for spec in self.inputs:
            if spec.name not in shapes:
                continue
            shape = tuple(int(s) for s in shapes[spec.name])
            if dtypes is not None and spec.name in dtypes and dtypes[spec.name] != spec.dtype:
                problems.append(f"{spec.name} must be {spec.dtype}, got {dtypes[spec.name]}")
            fixed = [(want, got) for want, got in zip(spec.dims, shape) if isinstance(want, int)]
            if len(shape) != spec.rank or any(want != got for want, got in fixed):
                # a wrong layout (NHWC for NCHW...) or rank: its sizes say nothing about the symbols
                problems.append(f"{spec.name} must have shape {spec.shape_text()} ({spec.layout}), got {shape}")
                continue
            for axis, (want, got) in enumerate(zip(spec.dims, shape)):
                if isinstance(want, int):
                    continue
                if got < 1:
                    problems.append(f"{spec.name} axis {axis} ({want}) must be >= 1, got {got}")
                elif want in symbols and symbols[want] != got:
                    problems.append(f"{spec.name} axis {axis} ({want}) is {got} but {first_seen[want]} has "
                                    f"{want} = {symbols[want]}")
                else:
                    symbols.setdefault(want, got)
                    first_seen.setdefault(want, spec.name)
        k = self.dims.size_multiple
        for side in (HEIGHT, WIDTH):
            if side in symbols and symbols[side] % k:
                problems.append(f"image {side} {symbols[side]} (from {first_seen[side]}) is not a multiple of "
                                f"{k}, the model's size_multiple")
        if problems:
            raise ContractError(f"{self.variant.part} graph: " + "; ".join(problems))
        return symbols

    def output_shapes(self, symbols: Mapping[str, int]) -> dict[str, tuple]:
        """Output shapes for the symbol values `resolve` returned."""
        values = dict(symbols)
        for derived, base in DERIVED.items():
            if base in values:
                values[derived] = values[base] // self.dims.mask_scale
        return {t.name: tuple(d if isinstance(d, int) else values[d] for d in t.dims) for t in self.outputs}

    def check_io(self, inputs: Mapping[str, tuple], outputs: Mapping[str, tuple], what: str = "engine") -> None:
        """Check a compiled model's I/O against the contract.

        inputs / outputs map tensor names to (dtype, shape) where a dynamic size is -1 (TensorRT's
        convention). Raises ContractError naming every mismatch.
        """
        problems: list[str] = []
        for kind, specs, given in (("input", self.inputs, inputs), ("output", self.outputs, outputs)):
            problems += _name_problems(kind, [t.name for t in specs], given)
            for spec in specs:
                if spec.name not in given:
                    continue
                dtype, shape = given[spec.name]
                if dtype != spec.dtype:
                    problems.append(f"{kind} {spec.name} is {dtype}, the contract says {spec.dtype}")
                shape = tuple(int(s) for s in shape)
                if len(shape) != spec.rank:
                    problems.append(f"{kind} {spec.name} has rank {len(shape)} {shape}, the contract says "
                                    f"{spec.shape_text()}")
                    continue
                for axis, (want, got) in enumerate(zip(spec.dims, shape)):
                    if isinstance(want, int) and got not in (-1, want):
                        problems.append(f"{kind} {spec.name} axis {axis} is {got}, the contract says {want}")
        if problems:
            raise ContractError(f"the {what} does not fit the lmt_fast I/O contract "
                                f"(v{CONTRACT_VERSION}, {self.variant.tag}): " + "; ".join(problems))

    # -- serialisation -----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"version": CONTRACT_VERSION, "variant": self.variant.to_dict(),
                           "dims": {"size_multiple": self.dims.size_multiple, "mask_scale": self.dims.mask_scale,
                                    "content_dim": self.dims.content_dim, "style_dim": self.dims.style_dim}},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IOContract":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"the contract metadata is not valid JSON: {exc}") from None
        version = values.get("version")
        if not isinstance(version, int) or version > CONTRACT_VERSION:
            raise ContractError(f"contract version {version!r} is not supported by this lmt_fast "
                                f"(it reads versions up to {CONTRACT_VERSION}); upgrade lmt_fast")
        try:
            return cls.build(ModelDims(**values["dims"]), Variant.from_dict(values["variant"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError(f"invalid contract metadata: {exc}") from None

    def describe(self) -> str:
        """A plain-text table of the graph's tensors."""
        rows = [f"{self.variant.part} graph ({self.variant.tag}), contract v{CONTRACT_VERSION}, "
                f"{HEIGHT}/{WIDTH} multiples of {self.dims.size_multiple}, "
                f"{CONTENT_HEIGHT} = {HEIGHT} / {self.dims.mask_scale}"]
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            for t in specs:
                rows.append(f"  {kind:6s} {t.name:19s} {t.dtype:8s} {t.shape_text():44s} {t.doc}")
        return "\n".join(rows)


def _name_problems(kind: str, expected: list[str], given: Mapping) -> list[str]:
    problems = []
    missing = [n for n in expected if n not in given]
    unexpected = sorted(n for n in given if n not in expected)
    if missing:
        problems.append(f"missing {kind}(s) {missing}")
    if unexpected:
        problems.append(f"unexpected {kind}(s) {unexpected} (the graph's {kind}s are {expected})")
    return problems


# -- the tensors of each part ------------------------------------------------------------------------

def _image(name: str, io: str, dtype: str, doc: str, height=HEIGHT, width=WIDTH) -> TensorSpec:
    if io == "uint8":
        return TensorSpec(name, "uint8", (BATCH, height, width, 3), "NHWC", doc + ", uint8 RGB")
    return TensorSpec(name, dtype, (BATCH, 3, height, width), "NCHW", doc + ", in [-1, 1]")


def _mask(name: str, io: str, dtype: str, doc: str, height: str, width: str) -> TensorSpec:
    if io == "uint8":
        return TensorSpec(name, "uint8", (BATCH, height, width, 1), "NHWC", doc + ", 0..255")
    return TensorSpec(name, dtype, (BATCH, 1, height, width), "NCHW", doc + ", in [0, 1]")


def _mask_input(role: str, io: str, dtype: str) -> TensorSpec:
    return _mask(f"{role}_mask_in", io, dtype, f"replaces the learned {role} mask; any size (resized)",
                 f"{role}_mask_height", f"{role}_mask_width")


def _mask_output(role: str, io: str, dtype: str) -> TensorSpec:
    return _mask(f"{role}_mask", io, dtype, f"the {role}'s mask at content resolution", CONTENT_HEIGHT,
                 CONTENT_WIDTH)


def _specs(v: Variant, d: ModelDims) -> tuple[tuple, tuple]:
    attention = TensorSpec("exemplar_attention", v.dtype, (BATCH, d.content_dim, 1, 1), "NCHW",
                           "exemplar's channel attention (ExemplarCode.attention)")
    style = TensorSpec("exemplar_style", v.dtype, (BATCH, d.style_dim), "NC",
                       "exemplar's foreground style code (ExemplarCode.style_fg)")
    image_out = _image("image", v.io, v.dtype, "the translation")
    if v.part == "full":
        inputs = [_image("input", v.io, v.dtype, "image to translate"),
                  _image("exemplar", v.io, v.dtype, "exemplar, same size as input")]
        inputs += [_mask_input(role, v.io, v.dtype) for role in v.masks]
        outputs = [image_out, _mask_output("input", v.io, v.dtype), _mask_output("exemplar", v.io, v.dtype)]
    elif v.part == "style_encoder":
        inputs = [_image("exemplar", v.io, v.dtype, "exemplar")]
        inputs += [_mask_input(role, v.io, v.dtype) for role in v.masks]
        outputs = [attention, _mask_output("exemplar", v.io, v.dtype), style]
    else:
        inputs = [_image("input", v.io, v.dtype, "image to translate"), attention, style]
        inputs += [_mask_input(role, v.io, v.dtype) for role in v.masks]
        outputs = [image_out, _mask_output("input", v.io, v.dtype)]
    return tuple(inputs), tuple(outputs)
