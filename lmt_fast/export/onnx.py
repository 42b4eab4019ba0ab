"""Export a LOMIT generator to ONNX with the I/O contract of lmt_fast.export.contract.

    from lmt_fast.export import Variant, export_onnx
    export_onnx(generator, Variant(dtype="float16"), "model.onnx")

Exporter: torch.export-based (``torch.onnx.export(..., dynamo=True)``), the default and maintained
exporter of torch >= 2.9 (the TorchScript exporter is deprecated). It expresses "a multiple of 16" as a
derived dynamic dimension, emits the op family's InstanceNormalization forms directly (see
lmt_fast.export.lowering), a reflection pad as one Pad node, and custom nodes through
``torch.onnx.ops.symbolic``. Normalisations with fixed statistics (the mask network's BatchNorm, the
running-statistics instance norm of compat="official") are folded into their convolutions first
(lmt_fast.models.fold), so no exporter needs a rule for them and the graph has no running statistics.

In a float16 graph every reduction (not only the normalisations' statistics) reads float32
(lmt_fast.export.precision). Every export is checked before it is returned: the graph's inputs and
outputs must have the contract's names, element types and dynamic axes (an exporter that silently fixed
a dynamic size is an error).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from lmt_fast.export.contract import (
    CONFIG_KEY, CONTRACT_KEY, FILE_NAMES, PART_MASKS, VERSION_KEY, WEIGHTS_KEY, ContractError, IOContract, Variant,
)
from lmt_fast.export.graphs import graph_module
from lmt_fast.export.lowering import BACKEND, export_backend, official_hadain_in_float32
from lmt_fast.export.precision import reductions_in_float32

DEFAULT_OPSET = 18   # TensorRT 10's ONNX parser reads opsets 9-20; the dynamo exporter starts at 18
ONNX_DTYPES = {"float32": 1, "uint8": 2, "float16": 10}   # onnx.TensorProto element types
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8}
_LARGE_MODEL_BYTES = 1_800_000_000  # protobuf's 2 GB limit: store weights beside the .onnx above this


class ExportError(RuntimeError):
    """The exporter produced a graph that does not fit the contract, or could not export at all."""


def prepare_generator(generator: nn.Module, dtype: str = "float32") -> nn.Module:
    """The copy that is exported: eval mode, no gradients, fixed-statistics norms folded into convs,
    cast to `dtype` except the normalisations' affine parameters, which act inside the float32
    statistics and stay float32, and every norm routed through the export op backend."""
    from lmt_fast.models.fold import fold_norms
    from lmt_fast.models.layers import Norm

    g = fold_norms(generator).to("cpu")       # fold_norms works on a deep copy
    g.requires_grad_(False)
    if dtype == "float16":
        g.half()
        for module in g.modules():
            if isinstance(module, Norm):
                module.float()
    g.set_backend(BACKEND)
    return g


def export_onnx(generator: nn.Module, variant: Variant = Variant(), path: str | os.PathLike | None = None, *,
                opset: int = DEFAULT_OPSET):
    """Export one graph of the contract; returns the onnx.ModelProto (and writes it to `path` if given).

    The generator is not modified (a prepared copy is exported). Raises ValueError for a variant the
    model cannot have and ExportError when the exported graph breaks the contract.
    """
    import onnx

    config = generator.config
    if variant.custom_ops and config.compat != "paper":
        raise ValueError("custom ops (lmt::RegionAdaIN) exist for the paper's HAdaIN only; "
                         f"this model has compat={config.compat!r}")
    contract = IOContract.build(config, variant)
    module = graph_module(prepare_generator(generator, variant.dtype), contract)
    examples = example_inputs(contract)
    with export_backend(variant.custom_ops), \
            official_hadain_in_float32(variant.dtype == "float16" and config.compat == "official"), \
            _quiet_exporter(), torch.no_grad():
        try:  # dynamic_shapes has one entry: the graph modules take forward(*tensors)
            program = torch.onnx.export(module, examples, dynamo=True, dynamic_shapes=(dynamic_shapes(contract),),
                                        input_names=contract.input_names, output_names=contract.output_names,
                                        opset_version=opset, verbose=False)
        except Exception as exc:  # the exporter raises many types; keep its message
            raise ExportError(f"torch.onnx.export failed for the {variant.tag} graph: {exc}") from exc
    model = program.model_proto
    _drop_trace_metadata(model)
    _shapes_from_cast(model)
    if variant.dtype == "float16":
        reductions_in_float32(model)
    _name_dynamic_axes(model, contract)
    _write_metadata(model, contract, config, generator)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        save_model(model, path)
    return model


def export_files(generator: nn.Module, output: str | os.PathLike, *, exemplar_cached: bool = False,
                 masks=(), dtype: str = "float32", io: str = "float", custom_ops: bool = False,
                 opset: int = DEFAULT_OPSET, cache: bool = False, workers: int = 1) -> list[Path]:
    """What `lmt-fast export` writes.

    Without exemplar_cached: one graph (part "full") at `output` (a .onnx path). With it: a directory
    `output` holding style_encoder.onnx and translate.onnx, the masks split by role between them.
    cache=True takes graphs from (and adds them to) the export cache (lmt_fast.export.cache); then
    workers > 1 exports the graphs of an exemplar-cached export in parallel processes (see cached_exports).
    """
    output = Path(output)
    if exemplar_cached:
        if output.suffix == ".onnx":
            raise ValueError(f"with --exemplar-cached, -o names a directory for style_encoder.onnx and "
                             f"translate.onnx, not a .onnx file ({output})")
        parts = {"style_encoder": output / FILE_NAMES["style_encoder"], "translate": output / FILE_NAMES["translate"]}
    else:
        if output.suffix != ".onnx":
            raise ValueError(f"the output must be a .onnx file, got {output}")
        parts = {"full": output}
    variants = {part: Variant(part, tuple(m for m in masks if m in PART_MASKS[part]), dtype, io, custom_ops)
                for part in parts}
    if cache:
        from lmt_fast.export.cache import cached_exports

        sources = cached_exports([(generator, v) for v in variants.values()], opset=opset, workers=workers)
        for source, path in zip(sources, parts.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
    else:
        for part, path in parts.items():
            export_onnx(generator, variants[part], path, opset=opset)
    return list(parts.values())


def save_model(model, path: str | os.PathLike) -> Path:
    """Write atomically (a temporary name, then a rename); weights go to a side file above ~1.8 GB."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    large = model.ByteSize() > _LARGE_MODEL_BYTES
    try:
        onnx.save(model, str(tmp), save_as_external_data=large, location=path.name + ".data" if large else None)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def metadata_props(model_or_path) -> dict:
    """The metadata_props of an ONNX file or ModelProto, as a dict."""
    import onnx

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        model = onnx.load(str(model_or_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(model_or_path) -> tuple[IOContract, dict, str]:
    """(contract, LOMITConfig dict, lmt_fast version) from an ONNX file or ModelProto lmt_fast exported."""
    props = metadata_props(model_or_path)
    if CONTRACT_KEY not in props or CONFIG_KEY not in props:
        raise ContractError(f"{model_or_path if isinstance(model_or_path, (str, os.PathLike)) else 'the model'} "
                            f"has no lmt_fast metadata ({CONTRACT_KEY!r}); was it exported by lmt-fast export?")
    return IOContract.from_json(props[CONTRACT_KEY]), json.loads(props[CONFIG_KEY]), props.get(VERSION_KEY, "")


# -- example inputs and dynamic shapes ----------------------------------------------------------------

def example_inputs(contract: IOContract, batch: int = 2) -> tuple:
    """Inputs to trace with: batch 2 and unequal height / width (so no size is mistaken for a constant)."""
    k = contract.dims.size_multiple
    sizes = {"batch": batch, "height": 2 * k, "width": 3 * k}
    gen = torch.Generator().manual_seed(0)
    tensors = []
    for spec in contract.inputs:
        shape = [d if isinstance(d, int) else sizes.get(d, 5 * k // 2 + 1) for d in spec.dims]
        dtype = TORCH_DTYPES[spec.dtype]
        if dtype == torch.uint8:
            t = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        else:
            t = torch.rand(shape, generator=gen)
            t = t * 2 - 1 if spec.layout == "NCHW" and shape[1] == 3 else t
        tensors.append(t.to(dtype))
    return tuple(tensors)


def dynamic_shapes(contract: IOContract) -> tuple:
    """torch.export dimensions for every symbolic axis: one Dim per symbol, shared by all inputs that use
    it; image sides as size_multiple * Dim, so the graph states the multiple."""
    from torch.export import Dim

    k = contract.dims.size_multiple
    dims: dict = {}

    def dim(symbol: str):
        if symbol not in dims:
            if symbol in ("height", "width") and k > 1:
                dims[symbol] = k * Dim(f"{symbol}_blocks", min=1)
            else:
                dims[symbol] = Dim(symbol, min=1)
        return dims[symbol]

    return tuple({axis: dim(d) for axis, d in enumerate(spec.dims) if isinstance(d, str)}
                 for spec in contract.inputs)


def _name_dynamic_axes(model, contract: IOContract) -> None:
    """Give the graph's dynamic axes the contract's symbol names (the exporter writes e.g. '16*height_blocks')
    and check names, element types and ranks; a dynamic axis the exporter made static is an error."""
    graph = model.graph
    renames: dict[str, str] = {}
    problems: list[str] = []
    for kind, values, specs in (("input", graph.input, contract.inputs), ("output", graph.output, contract.outputs)):
        names = [v.name for v in values]
        if names != [s.name for s in specs]:
            problems.append(f"{kind}s are {names}, the contract says {[s.name for s in specs]}")
            continue
        for value, spec in zip(values, specs):
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type != ONNX_DTYPES[spec.dtype]:
                problems.append(f"{kind} {spec.name} has ONNX element type {tensor_type.elem_type}, "
                                f"the contract says {spec.dtype}")
            shape = tensor_type.shape.dim
            if len(shape) != spec.rank:
                problems.append(f"{kind} {spec.name} has rank {len(shape)}, the contract says {spec.shape_text()}")
                continue
            for axis, (proto_dim, want) in enumerate(zip(shape, spec.dims)):
                if isinstance(want, int):
                    if proto_dim.HasField("dim_value") and proto_dim.dim_value != want:
                        problems.append(f"{kind} {spec.name} axis {axis} is {proto_dim.dim_value}, not {want}")
                elif proto_dim.HasField("dim_value"):
                    problems.append(f"{kind} {spec.name} axis {axis} ({want}) was exported as the fixed size "
                                    f"{proto_dim.dim_value}; it must stay dynamic")
                elif proto_dim.dim_param:
                    renames.setdefault(proto_dim.dim_param, want)
    if problems:
        raise ExportError(f"the exported {contract.variant.tag} graph breaks the I/O contract: " + "; ".join(problems))
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        for proto_dim in value.type.tensor_type.shape.dim:
            if proto_dim.dim_param in renames:
                proto_dim.dim_param = renames[proto_dim.dim_param]


def _drop_trace_metadata(model) -> None:
    """The exporter annotates nodes with Python stack traces (absolute source paths) and FX details:
    debugging aids that make files bigger and machine-dependent."""
    for node in model.graph.node:
        del node.metadata_props[:]


def _shapes_from_cast(model) -> None:
    """Let Shape nodes read a uint8 input's shape from its Cast to float instead of the input itself.

    The exporter takes dynamic sizes from the graph inputs; TensorRT accepts UINT8 tensors only as
    network inputs consumed by a Cast (docs/operators.md), and the Cast's output has the same shape.
    """
    graph = model.graph
    uint8_inputs = {v.name for v in graph.input if v.type.tensor_type.elem_type == ONNX_DTYPES["uint8"]}
    casts = [node for node in graph.node if node.op_type == "Cast" and node.input and node.input[0] in uint8_inputs]
    cast_of = {node.input[0]: node.output[0] for node in casts}
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in cast_of:
            node.input[0] = cast_of[node.input[0]]
    # The casts read graph inputs only, so they can go first (keeps the nodes topologically sorted).
    first = set(cast_of.values())
    ordered = sorted(graph.node, key=lambda node: not (node.op_type == "Cast" and node.output[0] in first))
    ordered = [type(node).FromString(node.SerializeToString()) for node in ordered]
    del graph.node[:]
    graph.node.extend(ordered)


def _write_metadata(model, contract: IOContract, config, generator) -> None:
    import lmt_fast
    from lmt_fast.export.cache import model_digest

    values = {CONTRACT_KEY: contract.to_json(), CONFIG_KEY: json.dumps(config.to_dict(), sort_keys=True),
              VERSION_KEY: lmt_fast.__version__, WEIGHTS_KEY: model_digest(generator)}
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "lmt_fast"
    model.producer_version = lmt_fast.__version__
    model.doc_string = "LOMIT generator exported by lmt_fast.\n" + contract.describe()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs progress and optional-dependency warnings (torchvision) at WARNING level."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated", category=FutureWarning)
            yield
    finally:
        logger.setLevel(level)
