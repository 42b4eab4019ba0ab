"""Does TensorRT's ONNX parser support every node of a graph? Checked against trt_supported_ops.json.

That file is the operator matrix of onnx/onnx-tensorrt docs/operators.md (ONNX-TensorRT 10.1 GA; see its
"source" fields). Checked per node: the operator is listed; the element type of its first input is one
the list gives for it; inputs the list requires to be initializers / constants are; Resize's attributes
are among the supported modes; the opset is in the parser's range. Nodes of a custom domain
(``lmt::RegionAdaIN``) are plugin nodes: allowed only when named in ``plugins``, and reported.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

OPS_FILE = Path(__file__).with_name("trt_supported_ops.json")

# onnx.TensorProto element types -> the type names of the operator matrix
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
               16: "BF16"}
_CONSTANT_INPUT = re.compile(r"`(\w+)` (?:input )?must be (?:an initializer|a constant tensor)")
# Resize's restrictions in the operator matrix, as attribute -> supported values (antialias: not supported).
_RESIZE_SUPPORTED = {
    "mode": {"nearest", "linear"},
    "coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                       "align_corners"},
    "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
    "keep_aspect_ratio_policy": {"stretch"},
    "antialias": {0},
}


class UnsupportedOpsError(ValueError):
    """A graph uses operators (or forms of them) that TensorRT's ONNX parser does not import."""


@dataclass
class CoverageReport:
    operators: dict                                   # op type -> node count (standard domain)
    plugins: dict                                     # "domain::op" -> node count
    problems: list = field(default_factory=list)      # one line each

    @property
    def ok(self) -> bool:
        return not self.problems


@lru_cache(maxsize=1)
def supported_ops() -> dict:
    """The parsed trt_supported_ops.json."""
    return json.loads(OPS_FILE.read_text())


def check_tensorrt_coverage(model, plugins=(), raise_error: bool = True) -> CoverageReport:
    """Check every node of `model` (ModelProto or path); raises UnsupportedOpsError naming the problems."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    table = supported_ops()
    known = table["operators"]
    report = CoverageReport({}, {})
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not table["opset_min"] <= opset <= table["opset_max"]:
        report.problems.append(f"opset {opset} is outside the parser's range {table['opset_min']}-{table['opset_max']}")
    types = _value_types(model)
    constants = {t.name for t in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    unsupported: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            name = f"{node.domain}::{node.op_type}"
            report.plugins[name] = report.plugins.get(name, 0) + 1
            if name not in plugins:
                unsupported[name] = unsupported.get(name, 0) + 1
            continue
        report.operators[node.op_type] = report.operators.get(node.op_type, 0) + 1
        entry = known.get(node.op_type)
        if entry is None:
            unsupported[node.op_type] = unsupported.get(node.op_type, 0) + 1
            continue
        first = types.get(node.input[0]) if node.input else None
        if first is not None and entry.get("types") and first not in entry["types"]:
            report.problems.append(f"{node.op_type} ({node.name}) on {first}: the parser supports "
                                   f"{', '.join(entry['types'])}")
        if node.op_type == "Resize":
            report.problems += _resize_problems(node)
        for input_name in _CONSTANT_INPUT.findall(entry.get("restrictions", "")):
            index = _input_index(node.op_type, input_name, opset)
            if index is not None and index < len(node.input) and node.input[index] \
                    and node.input[index] not in constants:
                report.problems.append(f"{node.op_type} ({node.name}): input `{input_name}` must be an initializer "
                                       "or constant for TensorRT")
    if unsupported:
        listed = ", ".join(f"{op} (x{n})" for op, n in sorted(unsupported.items()))
        report.problems.insert(0, f"operators TensorRT's ONNX parser does not support: {listed}")
    if report.problems and raise_error:
        raise UnsupportedOpsError("TensorRT coverage check failed (operator list: "
                                  f"{table['source_release']}): " + "; ".join(report.problems))
    return report


def _resize_problems(node) -> list[str]:
    import onnx

    problems = []
    for attribute in node.attribute:
        allowed = _RESIZE_SUPPORTED.get(attribute.name)
        value = onnx.helper.get_attribute_value(attribute)
        value = value.decode() if isinstance(value, bytes) else value
        if allowed is not None and value not in allowed:
            problems.append(f"Resize ({node.name}): {attribute.name}={value!r} is not supported by TensorRT's parser "
                            f"(supported: {', '.join(map(str, sorted(allowed, key=str)))})")
    return problems


def _value_types(model) -> dict:
    """Element type name of every value whose type is known after ONNX shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # custom-domain nodes or odd graphs: use what the model itself declares
        inferred = model
    g = inferred.graph
    types = {}
    for value in list(g.input) + list(g.output) + list(g.value_info):
        elem = value.type.tensor_type.elem_type
        if elem in _TYPE_NAMES:
            types[value.name] = _TYPE_NAMES[elem]
    for tensor in g.initializer:
        if tensor.data_type in _TYPE_NAMES:
            types[tensor.name] = _TYPE_NAMES[tensor.data_type]
    return types


def _input_index(op_type: str, input_name: str, opset) -> int | None:
    import onnx

    try:
        schema = onnx.defs.get_schema(op_type, opset or onnx.defs.onnx_opset_version())
    except Exception:
        return None
    names = [i.name for i in schema.inputs]
    return names.index(input_name) if input_name in names else None
