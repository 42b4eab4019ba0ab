"""Keep every reduction of a float16 graph in float32.

The normalisations already compute their statistics in float32 (lmt_fast.export.lowering). What is left
in float16 after the export are plain reductions of the model code, e.g. the global average pools of the
attention and style heads (``x.mean(dim=(2, 3))``): a float16 sum over H x W overflows once the map is
large (65504 / (128 * 128) = 4 per element), and TensorRT 11 computes exactly in the types the graph states.
This pass casts their inputs to float32 and their results back, so the graph states float32 there too.
"""
from __future__ import annotations

FLOAT, FLOAT16 = 1, 10   # onnx.TensorProto element types
REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                        "ReduceLogSumExp", "GlobalAveragePool", "GlobalLpPool"})


def reductions_in_float32(model) -> int:
    """Rewrite `model` (an onnx.ModelProto, in place): float16 reductions read a float32 copy of their input
    and cast their result back to float16. Returns the number of reductions rewritten."""
    import onnx

    types = _element_types(model)
    helper = onnx.helper
    nodes = []
    rewritten = 0
    for index, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in REDUCTIONS or types.get(node.input[0]) != FLOAT16:
            nodes.append(node)
            continue
        tag = node.name or f"reduction_{index}"
        wide_in, wide_out = f"{tag}_float32_input", f"{tag}_float32_output"
        nodes.append(helper.make_node("Cast", [node.input[0]], [wide_in], name=f"{tag}_to_float32", to=FLOAT))
        result = node.output[0]
        node.input[0], node.output[0] = wide_in, wide_out
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [wide_out], [result], name=f"{tag}_to_float16", to=FLOAT16))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


def _element_types(model) -> dict:
    """Element type of every value ONNX shape inference knows (inputs, initializers, intermediates)."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    types = {v.name: v.type.tensor_type.elem_type for v in values}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types
