"""Export an MGST purifier to ONNX, with the op family lowered exactly as for LOMIT.

    from lmt_fast.export.mgst import export_mgst_onnx, check_mgst_onnx
    export_mgst_onnx(generator, "purifier.onnx")                  # stored synthetic style inside the graph
    export_mgst_onnx(generator, "styled.onnx", style="image")     # style image + mask as graph inputs
    check_mgst_onnx(generator, "purifier.onnx")                   # onnxruntime vs PyTorch, max |diff|

The exported copy routes every normalisation through the "onnx_export" op backend of
lmt_fast.export.lowering (instance norm -> InstanceNormalization, LayerNorm -> GroupNorm(1) form,
region_adain(stats="region") and masked_moments -> Mul / ReduceSum / Div / Sqrt with float32
statistics), the same lowering the LOMIT export uses.

I/O contract (float32, NCHW, images in [-1, 1], masks in [0, 1]):

    inputs   image        (batch, 3, height, width)        height, width: multiples of 2**n_downsample
             mask         (batch, 1, height, width)        attention = iris + pupil (absent for a global model)
             style_image  (1, 3, style_height, style_width)   only with style="image"
             style_mask   (1, 1, style_height, style_width)   only with style="image" and a region model
    output   purified     (batch, 3, height, width)

batch, height and width are dynamic (``dynamic=False`` fixes them to the model's training size).
The model's config and the contract are kept in the graph's metadata_props.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from lmt_fast.export.lowering import BACKEND, export_backend
from lmt_fast.export.onnx import DEFAULT_OPSET, ExportError, _drop_trace_metadata, _quiet_exporter, save_model

STYLE_SOURCES = ("stored", "image")
CONFIG_KEY = "lmt_fast.mgst.config"
CONTRACT_KEY = "lmt_fast.mgst.io"
VERSION_KEY = "lmt_fast.version"


class _StoredStyleGraph(nn.Module):
    def __init__(self, generator, with_mask: bool):
        super().__init__()
        self.generator, self.with_mask = generator, with_mask

    def forward(self, *tensors):
        image, mask = tensors[0], (tensors[1] if self.with_mask else None)
        return self.generator(image, mask)


class _StyleImageGraph(nn.Module):
    def __init__(self, generator, with_mask: bool):
        super().__init__()
        self.generator, self.with_mask = generator, with_mask

    def forward(self, *tensors):
        g = self.generator
        if self.with_mask:
            image, mask, style_image, style_mask = tensors
        else:
            (image, style_image), mask, style_mask = tensors, None, None
        style = g.style_from_image(style_image, style_mask)
        n = image.shape[0]
        style = type(style)(style.gamma.expand(n, -1, -1), style.beta.expand(n, -1, -1))
        m = g.input_mask(image, mask)
        h = g.encoder(torch.cat([image, m * 2 - 1], dim=1))
        return g.decode(h, g.feature_masks(m, h), style)


def io_contract(config, style: str = "stored") -> dict:
    """Names and symbolic shapes of the graph's inputs and outputs."""
    regions = config.mask_mode == "regions"
    inputs = [("image", ["batch", 3, "height", "width"])]
    if regions:
        inputs.append(("mask", ["batch", 1, "height", "width"]))
    if style == "image":
        inputs.append(("style_image", [1, 3, "style_height", "style_width"]))
        if regions:
            inputs.append(("style_mask", [1, 1, "style_height", "style_width"]))
    return {"inputs": [{"name": n, "shape": s, "dtype": "float32"} for n, s in inputs],
            "outputs": [{"name": "purified", "shape": ["batch", 3, "height", "width"], "dtype": "float32"}],
            "style": style, "size_multiple": config.size_multiple}


def example_inputs(config, style: str = "stored", batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs matching the contract: images in [-1, 1], hard masks with both regions present.

    The default size is the training size with a different batch, so no dimension is mistaken for a constant.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = config.image_size
    contract = io_contract(config, style)
    sizes = {"batch": batch, "height": h, "width": w, "style_height": h, "style_width": w}
    tensors = []
    for spec in contract["inputs"]:
        shape = [sizes.get(d, d) if isinstance(d, str) else d for d in spec["shape"]]
        if spec["name"].endswith("mask"):
            yy, xx = torch.meshgrid(torch.arange(shape[2]), torch.arange(shape[3]), indexing="ij")
            cy = torch.randint(shape[2] // 4, 3 * shape[2] // 4, (shape[0], 1, 1), generator=gen)
            cx = torch.randint(shape[3] // 4, 3 * shape[3] // 4, (shape[0], 1, 1), generator=gen)
            r = min(shape[2], shape[3]) / 5
            t = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).float()[:, None]
        else:
            t = torch.rand(shape, generator=gen) * 2 - 1
        tensors.append(t)
    return tuple(tensors)


def _dynamic_shapes(config, contract: dict):
    from torch.export import Dim

    k = config.size_multiple
    dims: dict = {}

    def dim(symbol: str):
        if symbol not in dims:
            if symbol != "batch" and k > 1:
                dims[symbol] = k * Dim(f"{symbol}_blocks", min=2)
            else:
                dims[symbol] = Dim(symbol, min=1)
        return dims[symbol]

    return tuple({axis: dim(d) for axis, d in enumerate(spec["shape"]) if isinstance(d, str)}
                 for spec in contract["inputs"])


def prepare_generator(generator: nn.Module) -> nn.Module:
    """The copy that is exported: eval mode, no gradients, float32, every op on the export backend."""
    g = copy.deepcopy(generator).to("cpu").float().eval()
    g.requires_grad_(False)
    g.set_backend(BACKEND)
    return g


def export_mgst_onnx(model: nn.Module, path: str | os.PathLike | None = None, *, style: str = "stored",
                     opset: int = DEFAULT_OPSET, dynamic: bool = True):
    """Export an MGSTGenerator; returns the onnx.ModelProto (and writes it to `path` if given).

    style="stored" bakes the checkpoint's synthetic-domain style into the graph (deployment needs no
    style image); style="image" takes a style image (and its mask) as inputs. The model itself is not
    modified. The graph is checked with onnx.checker (full check) before it is returned.
    """
    import onnx

    if style not in STYLE_SOURCES:
        raise ValueError(f"style must be one of {STYLE_SOURCES}, got {style!r}")
    config = model.config
    regions = config.mask_mode == "regions"
    contract = io_contract(config, style)
    g = prepare_generator(model)
    module = (_StoredStyleGraph(g, regions) if style == "stored" else _StyleImageGraph(g, regions)).eval()
    examples = example_inputs(config, style)
    names = [spec["name"] for spec in contract["inputs"]]
    # one entry: the graph modules take forward(*tensors)
    shapes = (_dynamic_shapes(config, contract),) if dynamic else None
    with export_backend(False), _quiet_exporter(), torch.no_grad():
        try:
            program = torch.onnx.export(module, examples, dynamo=True, dynamic_shapes=shapes, input_names=names,
                                        output_names=["purified"], opset_version=opset, verbose=False)
        except Exception as exc:  # the exporter raises many types; keep its message
            raise ExportError(f"torch.onnx.export failed for the MGST graph (style={style!r}): {exc}") from exc
    proto = program.model_proto
    _drop_trace_metadata(proto)
    _check_io(proto, contract, dynamic)
    import lmt_fast

    for key, value in ((CONFIG_KEY, json.dumps(config.to_dict(), sort_keys=True)),
                       (CONTRACT_KEY, json.dumps(contract)), (VERSION_KEY, lmt_fast.__version__)):
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "lmt_fast", lmt_fast.__version__
    proto.doc_string = (f"MGST purifier exported by lmt_fast (style={style}). Inputs: "
                        + ", ".join(f"{s['name']} {s['shape']}" for s in contract["inputs"]) + "; output: purified.")
    onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        save_model(proto, path)
    return proto


def _check_io(proto, contract: dict, dynamic: bool) -> None:
    graph = proto.graph
    problems = []
    for kind, values, specs in (("input", graph.input, contract["inputs"]), ("output", graph.output, contract["outputs"])):
        got = [v.name for v in values]
        want = [s["name"] for s in specs]
        if got != want:
            problems.append(f"{kind}s are {got}, the contract says {want}")
            continue
        for value, spec in zip(values, specs):
            dims = value.type.tensor_type.shape.dim
            if len(dims) != len(spec["shape"]):
                problems.append(f"{kind} {spec['name']} has rank {len(dims)}, expected {len(spec['shape'])}")
                continue
            for axis, (d, want_d) in enumerate(zip(dims, spec["shape"])):
                if isinstance(want_d, int) and d.HasField("dim_value") and d.dim_value != want_d:
                    problems.append(f"{kind} {spec['name']} axis {axis} is {d.dim_value}, not {want_d}")
                elif dynamic and isinstance(want_d, str) and d.HasField("dim_value"):
                    problems.append(f"{kind} {spec['name']} axis {axis} ({want_d}) was exported as the fixed size "
                                    f"{d.dim_value}; it must stay dynamic")
                elif isinstance(want_d, str) and d.dim_param:
                    d.dim_param = want_d
    if problems:
        raise ExportError("the exported MGST graph breaks its I/O contract: " + "; ".join(problems))


def run_onnx(path_or_proto, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run an exported graph with onnxruntime on the CPU; returns the purified images as a tensor."""
    import onnxruntime as ort

    source = str(path_or_proto) if isinstance(path_or_proto, (str, os.PathLike)) else path_or_proto.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {name: t.detach().cpu().float().numpy() for name, t in zip(names, inputs)}
    return torch.from_numpy(session.run(["purified"], feeds)[0])


def check_mgst_onnx(model: nn.Module, path_or_proto, *, style: str = "stored", inputs=None,
                    atol: float = 1e-4) -> float:
    """Compare onnxruntime with PyTorch (reference ops) on `inputs` (default: example inputs);
    returns the largest absolute difference and raises ExportError above `atol`."""
    config = model.config
    inputs = example_inputs(config, style, batch=3, seed=1) if inputs is None else tuple(inputs)
    g = copy.deepcopy(model).to("cpu").float().eval()
    g.set_backend("reference")
    regions = config.mask_mode == "regions"
    graph = _StoredStyleGraph(g, regions) if style == "stored" else _StyleImageGraph(g, regions)
    with torch.no_grad():
        expected = graph(*inputs)
    got = run_onnx(path_or_proto, inputs)
    diff = float((got - expected).abs().max())
    if not diff <= atol:
        raise ExportError(f"onnxruntime and PyTorch differ by {diff:.3g} (tolerance {atol:g})")
    return diff


def read_mgst_metadata(path: str | os.PathLike) -> tuple[dict, dict]:
    """(config dict, I/O contract) of an exported MGST graph."""
    import onnx

    proto = onnx.load(str(Path(path)), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if CONFIG_KEY not in props:
        raise ExportError(f"{path} has no MGST metadata ({CONFIG_KEY!r}); was it exported by export_mgst_onnx?")
    return json.loads(props[CONFIG_KEY]), json.loads(props[CONTRACT_KEY])
