"""ONNX export: the I/O contract, every export variant checked by onnx and onnxruntime against PyTorch,
TensorRT parser coverage, the op lowering, the uint8 rounding, custom nodes, Triton repositories, the CLI.

Graphs are exported from tiny models through the export cache in pytest's session temp dir (shared with
test_runtime_onnxruntime.py, which loads the same checkpoint), so each variant is exported once.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lmt_fast.export import ContractError, IOContract, ModelDims, Variant  # noqa: E402
from lmt_fast.export.cache import cached_export  # noqa: E402
from lmt_fast.export.coverage import UnsupportedOpsError, check_tensorrt_coverage, supported_ops  # noqa: E402
from lmt_fast.export.onnx import ExportError, export_onnx, read_metadata  # noqa: E402
from lmt_fast.export.precision import REDUCTIONS, reductions_in_float32  # noqa: E402
from lmt_fast.io import load_checkpoint  # noqa: E402
from lmt_fast.models import LOMITConfig, LOMITGenerator  # noqa: E402

SAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "lmt_fast" / "assets" / "samples"
SIZES = [(1, 64, 64), (2, 32, 48), (3, 80, 16)]   # batch 1..3 and several H x W through one graph
TOLERANCE = {"float32": 1e-4, "float16": 1e-2}    # relative error: max|onnx - torch| / max|torch|

# name -> (which generator, variant). "styled": the styled_checkpoint model (paper compat), whose graphs
# the Translator tests reuse; "micro" / "official": smaller models (paper / official compat), quicker to export.
VARIANTS = {
    "plain": ("styled", Variant()),
    "masks": ("styled", Variant(masks=("input", "exemplar"))),
    "style_encoder": ("styled", Variant("style_encoder")),
    "translate": ("styled", Variant("translate")),
    "uint8_io": ("micro", Variant(masks=("input", "exemplar"), io="uint8")),
    "float16": ("micro", Variant(dtype="float16")),
    "official": ("official", Variant()),
}
CUSTOM = ("micro", Variant(custom_ops=True))


# -- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models run faster on one thread than on two threads contending for a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"


MICRO = dict(n_downsample=1, style_extra_downsample=1, n_res_blocks=2, mask_blocks=1, mlp_blocks=0)
# instance norms of a MICRO generator: content encoder (stem, down, res convs) + decoder LN (res convs, up)
MICRO_NORMS = (1 + MICRO["n_downsample"] + MICRO["n_res_blocks"]) + (MICRO["n_res_blocks"] + MICRO["n_downsample"])


@pytest.fixture(scope="module")
def generators(styled_checkpoint):
    torch.manual_seed(3)
    official = LOMITGenerator(LOMITConfig.tiny(compat="official", **MICRO)).eval()
    micro = styled_generator_like(LOMITGenerator(LOMITConfig.tiny(**MICRO)).eval())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # give the running statistics (folded at export) non-trivial values
        for name, buffer in official.named_buffers():
            if name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.2)
    return {"styled": load_checkpoint(styled_checkpoint).generator, "official": official,
            "micro": micro}


def styled_generator_like(generator):
    """Scale the style encoder up so the exemplar visibly matters (as conftest.styled_generator does)."""
    with torch.no_grad():
        for name, p in generator.style_encoder.named_parameters():
            if name.endswith("weight"):
                p.mul_(3.0)
    return generator


@pytest.fixture(scope="module")
def graph(generators, cache):
    """name -> (generator, variant, path, onnxruntime session); every graph exported up front, two at a time."""
    from lmt_fast.export.cache import cached_exports

    cached_exports([(generators[w], v) for w, v in list(VARIANTS.values()) + [CUSTOM]], directory=cache, workers=2)
    sessions = {}

    def get(name):
        if name not in sessions:
            which, variant = VARIANTS[name]
            path = cached_export(generators[which], variant, directory=cache)
            sessions[name] = (generators[which], variant, path,
                              ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
        return sessions[name]

    return get


# -- helpers --------------------------------------------------------------------------------------------

def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def to_uint8_image(y: np.ndarray) -> np.ndarray:
    """The contract's formula, in numpy: NCHW float -> NHWC uint8."""
    u = np.round((np.clip(y.astype(np.float32), -1, 1) + np.float32(1)) * np.float32(127.5))
    return np.clip(u, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def to_uint8_mask(m: np.ndarray) -> np.ndarray:
    return np.round(np.clip(m.astype(np.float32), 0, 1) * np.float32(255)).astype(np.uint8).transpose(0, 2, 3, 1)


def _nhwc_uint8(t: torch.Tensor, scale: float, shift: float) -> np.ndarray:
    return np.round((t.numpy() + shift) * scale).astype(np.uint8).transpose(0, 2, 3, 1)


def _nchw_float(a: np.ndarray, scale: float, shift: float) -> torch.Tensor:
    return torch.from_numpy(a.transpose(0, 3, 1, 2).astype(np.float32)) / scale - shift


def run_case(generator, variant, session, images: dict):
    """Feed `images` (float32 torch tensors: input, exemplar, input_mask, exemplar_mask in [-1,1]/[0,1])
    to the graph and to PyTorch; returns (onnx outputs, torch outputs) by output name, as numpy."""
    x, e = images["input"], images["exemplar"]
    m_in = images.get("input_mask") if "input" in variant.masks else None
    m_ex = images.get("exemplar_mask") if "exemplar" in variant.masks else None
    if variant.io == "uint8":  # the graph gets uint8; PyTorch gets exactly what the graph decodes
        feeds = {"input": _nhwc_uint8(x, 127.5, 1), "exemplar": _nhwc_uint8(e, 127.5, 1)}
        feeds.update({k: _nhwc_uint8(v, 255, 0) for k, v in (("input_mask_in", m_in), ("exemplar_mask_in", m_ex))
                      if v is not None})
        x, e = _nchw_float(feeds["input"], 127.5, 1), _nchw_float(feeds["exemplar"], 127.5, 1)
        m_in = _nchw_float(feeds["input_mask_in"], 255, 0) if m_in is not None else None
        m_ex = _nchw_float(feeds["exemplar_mask_in"], 255, 0) if m_ex is not None else None
    dtype = torch.float16 if variant.dtype == "float16" else torch.float32
    if variant.dtype == "float16":  # compare computation errors only: round the inputs first
        x, e = x.half().float(), e.half().float()
    with torch.no_grad():
        if variant.part == "full":
            out = generator(x, e, m_in, m_ex)
            want = {"image": out.image, "input_mask": out.input_mask, "exemplar_mask": out.exemplar_mask}
            if variant.io != "uint8":
                feeds = {"input": x, "exemplar": e}
                feeds.update({k: v for k, v in (("input_mask_in", m_in), ("exemplar_mask_in", m_ex)) if v is not None})
        elif variant.part == "style_encoder":
            code = generator.encode_exemplar(e)
            want = {"exemplar_attention": code.attention, "exemplar_mask": code.mask, "exemplar_style": code.style_fg}
            feeds = {"exemplar": e}
        else:
            code = generator.encode_exemplar(e)
            out = generator.translate_encoded(x, code)
            want = {"image": out.image, "input_mask": out.input_mask}
            feeds = {"input": x, "exemplar_attention": code.attention, "exemplar_style": code.style_fg}
    feeds = {k: (v.to(dtype).numpy() if isinstance(v, torch.Tensor) else v) for k, v in feeds.items()}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feeds)))
    want = {k: v.numpy() for k, v in want.items()}
    if variant.io == "uint8":
        want = {k: to_uint8_image(v) if k == "image" else to_uint8_mask(v) for k, v in want.items()}
    return got, want


def random_images(n, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return {"input": torch.rand(n, 3, h, w, generator=g) * 2 - 1,
            "exemplar": torch.rand(n, 3, h, w, generator=g) * 2 - 1,
            "input_mask": torch.rand(n, 1, h, w, generator=g),                # image resolution
            "exemplar_mask": torch.rand(n, 1, h // 4, w // 4, generator=g)}   # another resolution


def sample_images():
    from PIL import Image

    def image(name):
        a = np.asarray(Image.open(SAMPLES / name).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1

    hair = np.asarray(Image.open(SAMPLES / "input_hair_mask.png").convert("L"), dtype=np.float32) / 255
    mask = torch.from_numpy(hair)[None, None]
    return {"input": image("input.png"), "exemplar": image("exemplar.png"), "input_mask": mask, "exemplar_mask": mask}


# -- the contract ----------------------------------------------------------------------------------------

DIMS = ModelDims(size_multiple=16, mask_scale=4, content_dim=32, style_dim=8)


def test_contract_tensors_of_each_part():
    full = IOContract.build(DIMS, Variant(masks=("exemplar", "input")))
    assert full.input_names == ["input", "exemplar", "input_mask_in", "exemplar_mask_in"]
    assert full.output_names == ["image", "input_mask", "exemplar_mask"]
    assert full.spec("image").dims == ("batch", 3, "height", "width")
    assert full.spec("input_mask").dims == ("batch", 1, "content_height", "content_width")
    enc = IOContract.build(DIMS, Variant("style_encoder", ("exemplar",)))
    assert enc.input_names == ["exemplar", "exemplar_mask_in"]
    assert enc.output_names == ["exemplar_attention", "exemplar_mask", "exemplar_style"]
    assert enc.spec("exemplar_attention").dims == ("batch", 32, 1, 1)
    tr = IOContract.build(DIMS, Variant("translate", dtype="float16", io="uint8"))
    assert tr.input_names == ["input", "exemplar_attention", "exemplar_style"]
    assert tr.spec("input").dims == ("batch", "height", "width", 3) and tr.spec("input").dtype == "uint8"
    assert tr.spec("exemplar_style").dtype == "float16" and tr.output_names == ["image", "input_mask"]
    assert "contract v1" in tr.describe()


@pytest.mark.parametrize("kwargs, message", [
    (dict(part="decoder"), "part must be one of"),
    (dict(part="translate", masks=("exemplar",)), "takes masks"),
    (dict(dtype="bfloat16"), "dtype must be one of"),
    (dict(io="png"), "io must be one of"),
])
def test_variant_rejects_what_no_graph_has(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Variant(**kwargs)


def test_contract_resolves_sizes_and_names_every_problem():
    c = IOContract.build(DIMS, Variant(masks=("input",)))
    symbols = c.resolve({"input": (2, 3, 64, 48), "exemplar": (2, 3, 64, 48), "input_mask_in": (2, 1, 7, 9)})
    assert symbols["batch"] == 2 and symbols["height"] == 64 and symbols["input_mask_height"] == 7
    assert c.output_shapes(symbols)["input_mask"] == (2, 1, 16, 12)
    with pytest.raises(ContractError) as err:
        c.resolve({"input": (2, 3, 64, 40), "exemplar": (3, 3, 64, 40), "extra": (1,)},
                  {"input": "float64", "exemplar": "float32"})
    text = str(err.value)
    for fragment in ("missing input(s) ['input_mask_in']", "unexpected input(s) ['extra']", "input must be float32",
                     "exemplar axis 0 (batch) is 3 but input has batch = 2", "not a multiple of 16"):
        assert fragment in text
    with pytest.raises(ContractError, match="must have shape .*got \\(2, 64, 64, 3\\)"):
        c.resolve({"input": (2, 64, 64, 3), "exemplar": (2, 3, 64, 64), "input_mask_in": (2, 1, 8, 8)})


def test_contract_json_round_trip_and_version_check():
    c = IOContract.build(DIMS, Variant("translate", ("input",), "float16", "uint8", True))
    back = IOContract.from_json(c.to_json())
    assert back == c and back.inputs == c.inputs
    newer = json.loads(c.to_json())
    newer["version"] = 99
    with pytest.raises(ContractError, match="upgrade lmt_fast"):
        IOContract.from_json(json.dumps(newer))


# -- every variant: valid ONNX, the contract, TensorRT coverage, onnxruntime == PyTorch ----------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_exported_graph_fits_the_contract(name, graph, generators):
    generator, variant, path, _ = graph(name)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    contract, config, _ = read_metadata(model)
    assert contract == IOContract.build(generator.config, variant)
    assert config == generator.config.to_dict()
    for values, specs in ((model.graph.input, contract.inputs), (model.graph.output, contract.outputs)):
        assert [v.name for v in values] == [s.name for s in specs]
        for value, spec in zip(values, specs):
            dims = tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)
            assert dims == spec.dims, (spec.name, dims)        # dynamic axes carry the contract's symbols
    report = check_tensorrt_coverage(model)
    assert report.ok and not report.plugins, report.problems


@pytest.mark.parametrize("name", list(VARIANTS))
def test_onnxruntime_matches_pytorch_for_every_batch_and_size(name, graph):
    generator, variant, _, session = graph(name)
    for seed, (n, h, w) in enumerate(SIZES):
        got, want = run_case(generator, variant, session, random_images(n, h, w, seed))
        for key in want:
            assert got[key].shape == want[key].shape, (key, got[key].shape, want[key].shape)
            if variant.io == "uint8":  # one step of 1/255 where float rounding lands on the other side of .5
                assert np.abs(got[key].astype(int) - want[key].astype(int)).max() <= 1, key
                # resized uint8 masks land on exact .5 ties often (weights 1/4, 3/4 of integers / 255)
                assert np.mean(got[key] != want[key]) < (1e-3 if key == "image" else 5e-2), key
            else:
                assert rel_err(got[key], want[key]) <= TOLERANCE[variant.dtype], (key, n, h, w)


@pytest.mark.parametrize("name", ["plain", "masks", "uint8_io", "style_encoder", "translate", "float16"])
def test_onnxruntime_matches_pytorch_on_the_sample_images(name, graph):
    generator, variant, _, session = graph(name)
    got, want = run_case(generator, variant, session, sample_images())
    for key in want:
        if variant.io == "uint8":
            assert np.abs(got[key].astype(int) - want[key].astype(int)).max() <= 1, key
        else:
            assert rel_err(got[key], want[key]) <= TOLERANCE[variant.dtype], key


def test_float16_graph_is_typed_float16_with_float32_statistics(graph):
    _, _, path, _ = graph("float16")
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    elem = {v.name: v.type.tensor_type.elem_type for v in
            list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)}
    elem.update({t.name: t.data_type for t in model.graph.initializer})
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == FLOAT16 for v in list(model.graph.input) + list(model.graph.output))
    norms = [n for n in model.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == MICRO_NORMS + 1                               # + the highway AdaIN's statistics
    assert all(elem[i] == FLOAT for n in norms for i in n.input)       # statistics and affine in float32
    reductions = [n for n in model.graph.node if n.op_type in REDUCTIONS]
    assert reductions and all(elem[n.input[0]] == FLOAT for n in reductions)   # the pools too (mean over H x W)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert convs and all(elem[i] == FLOAT16 for n in convs for i in n.input)   # the heavy math in float16
    # float32 weights are the normalisations' per-channel affine parameters only
    float32 = [t for t in model.graph.initializer if t.data_type == FLOAT]
    assert all(int(np.prod(t.dims)) == (t.dims[0] if t.dims else 1) for t in float32), [t.dims for t in float32]


def test_float16_reductions_read_float32():
    """A float16 ReduceMean over a large map gets float32 input and result casts; float32 ones stay as they are."""
    h, T = onnx.helper, onnx.TensorProto
    axes = onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [h.make_node("ReduceMean", ["x", "axes"], ["m"], name="pool", keepdims=0),
             h.make_node("Cast", ["x"], ["x32"], to=T.FLOAT),
             h.make_node("ReduceSum", ["x32", "axes"], ["s"], name="sum32", keepdims=0)]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT16, [1, 2, 128, 128])],
                   [h.make_tensor_value_info("m", T.FLOAT16, [1, 2]), h.make_tensor_value_info("s", T.FLOAT, [1, 2])],
                   [axes])
    model.ir_version = 8   # what onnxruntime reads (onnx's default may be newer)
    assert reductions_in_float32(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [(n.op_type, n.name) for n in model.graph.node]
    assert ops[:3] == [("Cast", "pool_to_float32"), ("ReduceMean", "pool"), ("Cast", "pool_to_float16")]
    x = np.full((1, 2, 128, 128), 8.0, np.float16)      # a float16 sum of 16384 eights overflows (131072)
    m, _ = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert m.dtype == np.float16 and np.all(m == 8)


def test_official_compat_folds_running_statistics_and_exports_the_official_hadain(graph):
    _, _, path, _ = graph("official")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "BatchNormalization" not in ops   # the running-statistics norms were folded into the convs
    assert "ReduceMean" in ops               # the official HAdaIN's std of row stds, as standard ops


# -- uint8 rounding -------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # inside torch.export (torch 2.13)
def test_uint8_conversions_follow_the_contract_exactly():
    """round-half-to-even of (clip(y) + 1) * 127.5 in float32, also at exact halves (y = 0 -> 127.5 -> 128)."""
    from lmt_fast.export.graphs import image_from_uint8, image_to_uint8, mask_to_uint8
    from lmt_fast.image_inputs import uint8_to_tensor as _uint8_to_tensor

    class Post(torch.nn.Module):
        def forward(self, y, m, u):
            return image_to_uint8(y), mask_to_uint8(m), image_from_uint8(u)

    y = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5, -0.9960784, 0.0039216, 1 / 255, -1 / 255, 0.5, -0.5, 0.2])
    y = torch.cat([y, torch.rand(60, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1])
    y = y.reshape(1, 3, 4, 6)
    m = torch.cat([torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.5, 0.5 / 255, 1.5 / 255]),
                   torch.rand(17, generator=torch.Generator().manual_seed(1))]).reshape(1, 1, 4, 6)
    u = torch.arange(0, 216, dtype=torch.uint8).reshape(3, 4, 6, 3)
    program = torch.onnx.export(Post().eval(), (y, m, u), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got_y, got_m, got_u = session.run(None, {"y": y.numpy(), "m": m.numpy(), "u": u.numpy()})
    assert np.array_equal(got_y, to_uint8_image(y.numpy()))
    assert got_y[0, 0, 2, 0] == 128 and got_y[0, 0, 1, 0] == 0 and got_y[0, 0, 3, 0] == 255
    assert np.array_equal(got_m, to_uint8_mask(m.numpy()))
    assert np.array_equal(got_y, image_to_uint8(y).numpy())      # the torch side of the same formula
    # the uint8 -> float conversion is the Translator's
    want_u = torch.cat([_uint8_to_tensor(a) for a in u.numpy()]).numpy()
    assert np.array_equal(got_u, want_u)


# -- custom nodes ---------------------------------------------------------------------------------------

def test_custom_ops_export_one_region_adain_node_per_highway_adain(generators, graph, cache):
    path = cached_export(generators["micro"], CUSTOM[1], directory=cache)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    nodes = [n for n in model.graph.node if n.domain == "lmt"]
    assert [n.op_type for n in nodes] == ["RegionAdaIN"]          # LOMIT has one highway AdaIN
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"eps": pytest.approx(1e-5), "activation": b"none", "stats": b"global",
                     "plugin_namespace": b"lmt", "plugin_version": b"1"}
    assert len(nodes[0].input) == 4                                # x, masks, gamma, beta
    assert {(o.domain, o.version) for o in model.opset_import} >= {("lmt", 1)}
    # the highway's statistics moved into the node
    assert sum(n.op_type == "InstanceNormalization" for n in model.graph.node) == MICRO_NORMS
    with pytest.raises(UnsupportedOpsError, match="lmt::RegionAdaIN"):
        check_tensorrt_coverage(model)
    assert check_tensorrt_coverage(model, plugins=("lmt::RegionAdaIN",)).plugins == {"lmt::RegionAdaIN": 1}
    # onnxruntime has no kernel for it without the plugin: only the structure is testable here
    with pytest.raises(Exception, match="RegionAdaIN"):
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_custom_node_in_a_float16_graph_takes_float32_styles():
    """The plugin's typing (csrc/trt/region_adain_plugin.h): x and y in the graph's dtype, masks / gamma / beta
    float32, so a strongly typed TensorRT build keeps the statistics' inputs in float32."""
    from lmt_fast import ops
    from lmt_fast.export.lowering import BACKEND, REGION_ADAIN_NODE, export_backend

    class HighwayAdaIN(torch.nn.Module):
        def forward(self, x, mask, gf, bf, gb, bb):
            return ops.highway_adain(x, mask, gf, bf, gb, bb, backend=BACKEND)

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 8, 6, generator=g).half(), torch.rand(2, 1, 4, 3, generator=g).half(),
            *(torch.randn(2, 4, generator=g).half() for _ in range(4)))
    with export_backend(custom_ops=True):
        model = torch.onnx.export(HighwayAdaIN().eval(), args, dynamo=True, verbose=False).model_proto
    onnx.checker.check_model(model, full_check=True)
    node = next(n for n in model.graph.node if n.domain == REGION_ADAIN_NODE["domain"])
    assert node.op_type == REGION_ADAIN_NODE["op_type"] and len(node.input) == 4
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in
            list(inferred.graph.input) + list(inferred.graph.output) + list(inferred.graph.value_info)}
    FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [elem.get(i) for i in node.input] == [FLOAT16, FLOAT, FLOAT, FLOAT]
    assert elem.get(node.output[0]) == FLOAT16 and model.graph.output[0].type.tensor_type.elem_type == FLOAT16
    check_tensorrt_coverage(model, plugins=("lmt::RegionAdaIN",))


def test_custom_ops_need_the_papers_hadain(generators):
    with pytest.raises(ValueError, match="compat='official'"):
        export_onnx(generators["official"], Variant(custom_ops=True))


# -- the op lowering ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lowering_matches_the_reference_ops(dtype):
    from lmt_fast.export import lowering
    from lmt_fast.ops import reference

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 5, 12, 10, generator=g) * 3 + 1).to(dtype)
    res = torch.randn(2, 5, 12, 10, generator=g).to(dtype)
    w, b = torch.rand(5, generator=g) + 0.5, torch.randn(5, generator=g)
    masks = torch.rand(2, 3, 6, 5, generator=g)
    masks[:, 2] = 0                                    # an empty region
    gamma, beta = torch.rand(2, 3, 5, generator=g) + 0.5, torch.randn(2, 3, 5, generator=g)
    m1 = torch.rand(2, 1, 3, 5, generator=g)
    gf, bf, gb, bb = (torch.randn(2, 5, generator=g) for _ in range(4))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
    cases = [
        ("instance_norm", (x, w, b, 1e-5, "relu", res)),
        ("layer_norm", (x, w, b, 1e-5, "lrelu", res)),
        ("region_adain", (x, masks, gamma, beta, "region", 1e-5, "lrelu", res)),
        ("region_adain", (x, masks, gamma, beta, "global", 1e-5, None, None)),
        ("highway_adain", (x, m1, gf, bf, gb, bb, 1e-5)),
        ("masked_moments", (x, masks, 1e-5)),
    ]
    for table in (lowering.IMPLS, lowering.CUSTOM_IMPLS):   # custom-node forms compute alike outside export
        for op, args in cases:
            got, want = table[op](*args), reference.IMPLS[op](*args)
            for a, b_ in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                assert a.dtype == b_.dtype, op
                torch.testing.assert_close(a.float(), b_.float(), **tol, msg=op)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")
def test_region_statistics_export_as_standard_ops():
    """stats="region" (MGST) has no ONNX operator: it exports as Mul/ReduceSum in float32."""
    from lmt_fast import ops
    from lmt_fast.export.lowering import BACKEND, export_backend

    class RegionAdaIN(torch.nn.Module):
        def forward(self, x, masks, gamma, beta):
            return ops.region_adain(x, masks, gamma, beta, stats="region", activation="relu", backend=BACKEND)

    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 8, 6, generator=g), torch.rand(2, 2, 8, 6, generator=g),
            torch.rand(2, 2, 4, generator=g) + 0.5, torch.randn(2, 2, 4, generator=g))
    with export_backend():
        model = torch.onnx.export(RegionAdaIN().eval(), args, dynamo=True, verbose=False).model_proto
    assert {"ReduceSum", "Sqrt"} <= {n.op_type for n in model.graph.node}
    check_tensorrt_coverage(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, dict(zip([i.name for i in model.graph.input], (a.numpy() for a in args))))[0]
    want = ops.region_adain(*args, stats="region", activation="relu", backend="reference")
    assert rel_err(got, want.numpy()) < 1e-5


# -- coverage check and export guards ---------------------------------------------------------------------

def _model(nodes, inputs, outputs, initializers=(), opset=18):
    h = onnx.helper
    graph = h.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset), h.make_opsetid("lmt", 1)])


def test_coverage_names_unsupported_operators_and_forms():
    h, T = onnx.helper, onnx.TensorProto
    x = h.make_tensor_value_info("x", T.FLOAT, [4])
    u8 = h.make_tensor_value_info("u", T.UINT8, [2, 2])
    axes = h.make_tensor_value_info("axes", T.INT64, [1])
    nodes = [h.make_node("Unique", ["x"], ["y"]), h.make_node("Foo", ["x"], ["z"], domain="lmt"),
             h.make_node("ReduceMean", ["x", "axes"], ["r"]), h.make_node("Transpose", ["u"], ["t"]),
             h.make_node("Resize", ["x", "", "scales"], ["c"], mode="cubic", antialias=1)]
    outs = [h.make_tensor_value_info(n, T.FLOAT, None) for n in ("y", "z", "r", "c")] + [
        h.make_tensor_value_info("t", T.UINT8, None)]
    scales = onnx.numpy_helper.from_array(np.array([2.0], np.float32), "scales")
    with pytest.raises(UnsupportedOpsError) as err:
        check_tensorrt_coverage(_model(nodes, [x, u8, axes], outs, [scales]))
    text = str(err.value)
    assert "mode='cubic' is not supported" in text and "antialias=1" in text
    assert "does not support: Unique (x1), lmt::Foo (x1)" in text
    assert "ReduceMean" in text and "`axes` must be an initializer" in text
    assert "Transpose" in text and "UINT8" in text
    assert "10.1" in text                                          # which list it checked against
    table = supported_ops()
    assert table["source_commit"] and "onnx-tensorrt" in table["source"]
    assert "InstanceNormalization" in table["operators"] and "Unique" in table["not_supported"]


def test_export_refuses_a_graph_whose_dynamic_axis_became_fixed():
    from lmt_fast.export.onnx import _name_dynamic_axes

    h, T = onnx.helper, onnx.TensorProto
    contract = IOContract.build(DIMS, Variant("style_encoder"))
    inputs = [h.make_tensor_value_info("exemplar", T.FLOAT, ["b", 3, "h", "w"])]
    outputs = [h.make_tensor_value_info("exemplar_attention", T.FLOAT, [2, 32, 1, 1]),   # batch fixed at 2
               h.make_tensor_value_info("exemplar_mask", T.FLOAT, ["b", 1, "h4", "w4"]),
               h.make_tensor_value_info("exemplar_style", T.FLOAT, ["b", 8])]
    with pytest.raises(ExportError, match="exemplar_attention axis 0 \\(batch\\) was exported as the fixed size 2"):
        _name_dynamic_axes(_model([], inputs, outputs), contract)


# -- Triton model repository ----------------------------------------------------------------------------

def test_triton_repository_for_an_onnx_model(graph, tmp_path):
    from lmt_fast.export.triton_repo import write_triton_repo
    from lmt_fast.export.triton_schema import parse_config

    _, variant, path, _ = graph("uint8_io")
    folders = write_triton_repo(tmp_path / "repo", [path], "lomit", max_batch_size=4)
    assert folders == [tmp_path / "repo" / "lomit"]
    assert (folders[0] / "1" / "model.onnx").read_bytes() == path.read_bytes()
    config = parse_config((folders[0] / "config.pbtxt").read_text())
    assert (config.name, config.platform, config.max_batch_size) == ("lomit", "onnxruntime_onnx", 4)
    assert config.HasField("dynamic_batching")
    contract = read_metadata(path)[0]
    uint8 = config.input[0].DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_name["TYPE_UINT8"].number
    for tensors, specs in ((config.input, contract.inputs), (config.output, contract.outputs)):
        assert [t.name for t in tensors] == [s.name for s in specs]
        for t, spec in zip(tensors, specs):
            assert list(t.dims) == [d if isinstance(d, int) else -1 for d in spec.dims[1:]]   # no batch axis
            assert t.data_type == uint8
    info = json.loads((folders[0] / "lmt_fast.json").read_text())
    assert IOContract.from_json(json.dumps(info["contract"])) == contract


def test_triton_repository_for_exemplar_cached_graphs_and_plans(graph, tmp_path):
    from lmt_fast.export.tensorrt import write_sidecar
    from lmt_fast.export.profiles import build_profile
    from lmt_fast.export.triton_repo import write_triton_repo
    from lmt_fast.export.triton_schema import parse_config

    paths = [graph("style_encoder")[2], graph("translate")[2]]
    folders = write_triton_repo(tmp_path / "repo", paths, "lomit")
    assert [f.name for f in folders] == ["lomit_style_encoder", "lomit_translate"]
    # a TensorRT plan with its sidecar: platform tensorrt_plan, max_batch_size bounded by the profile
    contract, config, _ = read_metadata(graph("plain")[2])
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real engine")
    write_sidecar(plan, contract, config, [build_profile(contract, default_size=64, max_batch=4)], "10.8.0")
    folder = write_triton_repo(tmp_path / "repo", [plan], "lomit_trt", max_batch_size=4)[0]
    parsed = parse_config((folder / "config.pbtxt").read_text())
    assert parsed.platform == "tensorrt_plan" and (folder / "1" / "model.plan").is_file()
    with pytest.raises(ContractError, match="exceeds the engine's largest profile batch 4"):
        write_triton_repo(tmp_path / "repo", [plan], "lomit_trt", max_batch_size=8)


def test_triton_schema_rejects_what_the_server_would():
    from lmt_fast.export.triton_schema import parse_config

    with pytest.raises(ValueError, match="no field named \"dims_\""):
        parse_config('name: "m" input [ { name: "x" data_type: TYPE_FP32 dims_: [ 3 ] } ]')
    with pytest.raises(ValueError, match="TYPE_FLOAT32"):
        parse_config('name: "m" input [ { name: "x" data_type: TYPE_FLOAT32 dims: [ 3 ] } ]')


# -- command line ---------------------------------------------------------------------------------------

def test_cli_export_writes_graphs_and_a_triton_repository(run_cli, styled_checkpoint, graph, cache, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("LMT_FAST_ONNX_CACHE", str(cache))   # the graphs above: no new export
    out = tmp_path / "model.onnx"
    r = run_cli("export", styled_checkpoint, "-o", out, "--cache", "--triton-repo", tmp_path / "repo",
                "--model-name", "lmt")
    assert r.code == 0, r.err
    assert out.read_bytes() == graph("plain")[2].read_bytes()
    assert "TensorRT parser coverage ok" in r.out and (tmp_path / "repo" / "lmt" / "config.pbtxt").is_file()
    r = run_cli("export", styled_checkpoint, "-o", tmp_path / "cached", "--exemplar-cached", "--cache")
    assert r.code == 0, r.err
    assert sorted(p.name for p in (tmp_path / "cached").iterdir()) == ["style_encoder.onnx", "translate.onnx"]


@pytest.mark.parametrize("argv, fragment", [
    (["--exemplar-cached", "-o", "x.onnx"], "names a directory"),
    (["-o", "x.pt"], "must be a .onnx file"),
    ([], "give -o/--output, --triton-repo"),
    (["--compat", "official", "-o", "x.onnx"], "running instance-norm statistics"),
])
def test_cli_export_user_errors_are_one_line(run_cli, styled_checkpoint, tmp_path, argv, fragment):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    r = run_cli("export", styled_checkpoint, *argv)
    assert r.code == 2 and "Traceback" not in r.err
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("lmt-fast: error:") and fragment in r.err_lines[0]
