"""TensorRT: optimization profiles, engine I/O and request checks (plain data, no GPU needed), the
build-engine command without TensorRT, plugin-library loading and the Translator's TensorRTGenerator
(engine descriptions, configs, and the generator interface over stand-in engines run by onnxruntime),
and, where tensorrt and a GPU exist, real engines.

The GPU tests run as they are on a machine with a CUDA GPU, PyTorch with CUDA and the tensorrt package
(cuda-python / pycuda for those buffer kinds); elsewhere they skip and say what is missing.
"""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from lmt_fast.export.contract import ContractError, IOContract, ModelDims, Variant
from lmt_fast.export.profiles import Profile, ShapeRange, build_profile, parse_profile_arg, select_profile
from lmt_fast.export.tensorrt import (
    TensorRTUnavailableError, build_engine, read_sidecar, trtexec_command, write_sidecar,
)
from lmt_fast.runtime import tensorrt as rt
from lmt_fast.runtime.tensorrt import (
    EngineIO, EngineRunner, PluginLoadError, TensorRTGenerator, check_request, describe_engine, engine_files,
    infer_contract, is_engine_path, load_plugins, resolve_config, write_engine_sidecar,
)

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
DIMS = ModelDims(size_multiple=16, mask_scale=4, content_dim=32, style_dim=8)
FULL = IOContract.build(DIMS, Variant())


def _gpu_reason() -> str | None:
    if not HAS_TENSORRT:
        return "the tensorrt package is not installed"
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU (or PyTorch without CUDA)"
    return None


needs_gpu = pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))


# -- profiles -------------------------------------------------------------------------------------------

def test_profile_argument_parsing():
    name, r = parse_profile_arg("input:1x3x64x64:4x3x128x128:8x3x256x256")
    assert name == "input" and r == ShapeRange((1, 3, 64, 64), (4, 3, 128, 128), (8, 3, 256, 256))
    assert r.covers((2, 3, 100, 200)) and not r.covers((9, 3, 64, 64)) and not r.covers((1, 3, 64))
    for bad, message in (("input:1x3x64x64:4x3x128x128", "NAME:MIN:OPT:MAX"),
                         ("input:1x3x64:a:b", "not a shape"), ("input:0x3x64x64:1x3x64x64:1x3x64x64", ">= 1")):
        with pytest.raises(ContractError, match=message):
            parse_profile_arg(bad)


def test_profile_fills_the_inputs_that_share_sizes():
    contract = IOContract.build(DIMS, Variant(masks=("input", "exemplar")))
    p = build_profile(contract, ["input:1x3x64x64:2x3x128x128:4x3x256x256"])
    assert p.ranges["exemplar"] == p.ranges["input"]
    assert p.ranges["input_mask_in"] == ShapeRange((1, 1, 64, 64), (2, 1, 128, 128), (4, 1, 256, 256))
    translate = IOContract.build(DIMS, Variant("translate"))
    p = build_profile(translate, ["input:1x3x64x64:2x3x64x64:8x3x64x64"])
    assert p.ranges["exemplar_attention"] == ShapeRange((1, 32, 1, 1), (2, 32, 1, 1), (8, 32, 1, 1))
    assert p.ranges["exemplar_style"] == ShapeRange((1, 8), (2, 8), (8, 8))
    default = build_profile(FULL, default_size=128, max_batch=4)
    assert default.ranges["input"] == ShapeRange((1, 3, 128, 128), (1, 3, 128, 128), (4, 3, 128, 128))


def test_profile_errors_name_every_problem():
    with pytest.raises(ContractError) as err:
        build_profile(FULL, ["input:1x3x64x64:2x3x64x64:4x3x128x100", "exemplar:1x3x64x64:1x3x64x64:1x3x64x64",
                             "mask:1x1x8x8:1x1x8x8:1x1x8x8"])
    text = str(err.value)
    assert "no input(s) ['mask']" in text
    assert "exemplar axis 0 (batch) ranges 1:1:1 but input has 1:2:4" in text
    assert "width range 64:64:100 (from input) must use multiples of 16" in text
    with pytest.raises(ContractError, match="axis 1 is fixed at 3, got 4:4:4"):
        build_profile(FULL, ["input:1x4x64x64:1x4x64x64:1x4x64x64"])
    with pytest.raises(ContractError, match="min <= opt <= max, got 4:2:8"):
        build_profile(FULL, ["input:4x3x64x64:2x3x64x64:8x3x64x64"])
    with pytest.raises(ContractError, match="no range for input .*--profile input:MIN:OPT:MAX"):
        build_profile(FULL)                                   # nothing given and no default size


def test_trtexec_command_is_the_builders_equivalent():
    p = build_profile(FULL, ["input:1x3x64x64:2x3x128x128:4x3x256x256"])
    cmd = trtexec_command("m.onnx", "m.plan", p, workspace_mib=1024, plugins=["libplug.so"])
    assert cmd == ("trtexec --onnx=m.onnx --saveEngine=m.plan "
                   "--minShapes=input:1x3x64x64,exemplar:1x3x64x64 "
                   "--optShapes=input:2x3x128x128,exemplar:2x3x128x128 "
                   "--maxShapes=input:4x3x256x256,exemplar:4x3x256x256 "
                   "--memPoolSize=workspace:1024M --dynamicPlugins=libplug.so")
    # the two ways trtexec loads plugin libraries (csrc/trt/README.md), and a plan that carries its library
    cmd = trtexec_command("m.onnx", "m.plan", p, plugins=["dyn.so"], static_plugins=["static.so"],
                          serialize_plugins=True)
    assert cmd.endswith("--dynamicPlugins=dyn.so --setPluginsToSerialize=dyn.so --staticPlugins=static.so")


# -- engine I/O and requests (plain data standing in for what EngineRunner reads from an engine) ----------

def engine_io(image_dtype="float32", profiles=None, **changes) -> EngineIO:
    inputs = {"input": (image_dtype, (-1, 3, -1, -1)), "exemplar": (image_dtype, (-1, 3, -1, -1))}
    outputs = {"image": (image_dtype, (-1, 3, -1, -1)), "input_mask": (image_dtype, (-1, 1, -1, -1)),
               "exemplar_mask": (image_dtype, (-1, 1, -1, -1))}
    for name, value in changes.items():
        target = inputs if name in inputs or name.endswith("_in") else outputs
        if value is None:
            target.pop(name)
        else:
            target[name] = value
    profiles = profiles or [build_profile(FULL, ["input:1x3x64x64:2x3x64x64:4x3x128x128"])]
    return EngineIO(inputs, outputs, tuple(profiles))


def test_engine_io_is_checked_against_the_contract():
    io = engine_io()
    FULL.check_io(io.inputs, io.outputs)
    bad = engine_io(image=("float16", (-1, 3, -1, -1)), exemplar_mask=None, input=("float32", (-1, 4, -1, -1)))
    with pytest.raises(ContractError) as err:
        FULL.check_io(bad.inputs, bad.outputs)
    text = str(err.value)
    assert "does not fit the lmt_fast I/O contract" in text
    assert "input input axis 1 is 4, the contract says 3" in text
    assert "output image is float16, the contract says float32" in text
    assert "missing output(s) ['exemplar_mask']" in text


def test_requests_are_checked_for_shape_dtype_and_profile():
    io = engine_io()
    symbols, profile = check_request(FULL, io, {"input": (2, 3, 64, 64), "exemplar": (2, 3, 64, 64)},
                                     {"input": "float32", "exemplar": "float32"})
    assert profile == 0 and symbols["batch"] == 2
    with pytest.raises(ContractError, match="exemplar must be float32, got float16"):
        check_request(FULL, io, {"input": (2, 3, 64, 64), "exemplar": (2, 3, 64, 64)},
                      {"input": "float32", "exemplar": "float16"})
    with pytest.raises(ContractError, match="exemplar axis 2 \\(height\\) is 32 but input has height = 64"):
        check_request(FULL, io, {"input": (2, 3, 64, 64), "exemplar": (2, 3, 32, 64)}, {})
    with pytest.raises(ContractError) as err:
        check_request(FULL, io, {"input": (8, 3, 64, 64), "exemplar": (8, 3, 64, 64)}, {})
    text = str(err.value)
    assert "no optimization profile of the engine covers input 8x3x64x64" in text
    assert "profile 0: input:1x3x64x64:2x3x64x64:4x3x128x128" in text and "rebuild the engine" in text
    big = ShapeRange((8, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64))
    second = Profile({"input": big, "exemplar": big})
    assert select_profile(io.profiles + (second,), {"input": (8, 3, 64, 64), "exemplar": (8, 3, 64, 64)}) == 1


def test_contract_of_an_engine_without_sidecar_comes_from_its_tensor_names():
    assert infer_contract(engine_io()).variant == Variant()
    io = EngineIO({"input": ("uint8", (-1, -1, -1, 3)), "exemplar_attention": ("float16", (-1, 32, 1, 1)),
                   "exemplar_style": ("float16", (-1, 8)), "input_mask_in": ("uint8", (-1, -1, -1, 1))},
                  {"image": ("uint8", (-1, -1, -1, 3)), "input_mask": ("uint8", (-1, -1, -1, 1))}, ())
    contract = infer_contract(io)
    assert contract.variant == Variant("translate", ("input",), "float16", "uint8")
    contract.check_io(io.inputs, io.outputs)
    with pytest.raises(ContractError, match="not those of an lmt_fast graph"):
        infer_contract(EngineIO({"x": ("float32", (1,))}, {}, ()))


def test_sidecar_round_trip(tmp_path):
    plan = tmp_path / "m.plan"
    profile = build_profile(FULL, default_size=64)
    write_sidecar(plan, FULL, {"image_size": 64}, [profile], "10.9.0")
    info = read_sidecar(plan)
    assert IOContract.from_json(json.dumps(info["contract"])) == FULL
    assert info["profiles"][0]["input"] == [[1, 3, 64, 64], [1, 3, 64, 64], [8, 3, 64, 64]]
    assert read_sidecar(tmp_path / "none.plan") is None


# -- engine builds and EngineRunner over a stand-in tensorrt module ----------------------------------------------
# A real engine needs TensorRT and a GPU, neither of which CI has. These stand-ins have exactly the attributes
# lmt_fast calls (named as in the Python bindings of TensorRT 10 and 11, python/src/infer/pyCore.cpp), so
# the control flow is tested on the CPU: network flags per version, profiles, the sidecar, the contract
# check of a loaded engine, profile selection, the execution-context calls, and that a bad request is one
# ContractError raised before any buffer is touched. The real calls run in the GPU tests further down.

class _Enum:
    def __init__(self, name, value=0):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __repr__(self):
        return f"DataType.{self.name}"


_TRT_DTYPES = {"float32": "FLOAT", "float16": "HALF", "uint8": "UINT8"}


class StandInTensor:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, _Enum(_TRT_DTYPES[dtype]), tuple(shape)


class StandInContext:
    """IExecutionContext: records calls; output shapes come from the contract, as TensorRT infers them."""

    def __init__(self, contract):
        self.contract, self.calls, self.shapes = contract, [], {}

    def set_optimization_profile_async(self, index, stream):
        self.calls.append(("profile", index, stream))
        return True

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, tuple(shape)))
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.contract.output_shapes(self.contract.resolve(self.shapes))[name]

    def set_tensor_address(self, name, address):
        self.calls.append(("address", name, address))
        return True

    def execute_async_v3(self, stream):
        self.calls.append(("execute", stream))
        return True


class StandInEngine:
    """ICudaEngine's named-tensor API over an EngineIO."""

    def __init__(self, io: EngineIO, contract):
        self.io, self.contract, self.contexts = io, contract, []
        self.names = list(io.inputs) + list(io.outputs)

    @property
    def num_io_tensors(self):
        return len(self.names)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return StandInTensorRT.TensorIOMode.INPUT if name in self.io.inputs else StandInTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return _Enum(_TRT_DTYPES[{**self.io.inputs, **self.io.outputs}[name][0]])

    def get_tensor_shape(self, name):
        return {**self.io.inputs, **self.io.outputs}[name][1]

    @property
    def num_optimization_profiles(self):
        return len(self.io.profiles)

    def get_tensor_profile_shape(self, name, index):
        r = self.io.profiles[index].ranges[name]
        return [r.min, r.opt, r.max]

    def create_execution_context(self):
        self.contexts.append(StandInContext(self.contract))
        return self.contexts[-1]


class StandInNetwork:
    def __init__(self, flags):
        self.flags, self.inputs, self.outputs = flags, [], []

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))

    def get_input(self, index):
        return self.inputs[index]

    def get_output(self, index):
        return self.outputs[index]


class StandInTensorRT:
    """The `tensorrt` module (10.x or 11.x): builder, parser, runtime and the enums lmt_fast uses."""

    class TensorIOMode:
        INPUT, OUTPUT = _Enum("INPUT"), _Enum("OUTPUT", 1)

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, severity=2):
            self.severity = severity

    class MemoryPoolType:
        WORKSPACE = _Enum("WORKSPACE")

    def __init__(self, version="10.13.0", engine=None, network_io=None, parse_errors=()):
        self.__version__ = version
        self.engine, self.network_io, self.parse_errors = engine, network_io, list(parse_errors)
        flags = {"STRONGLY_TYPED": _Enum("STRONGLY_TYPED", 1)}
        if version.startswith("10."):
            flags["EXPLICIT_BATCH"] = _Enum("EXPLICIT_BATCH", 0)   # deprecated and ignored in 10, gone in 11
            self.BuilderFlag = type("BuilderFlag", (), {"FP16": _Enum("FP16")})
        self.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), flags)
        self.built = []
        trt = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return trt.engine if data == b"ENGINE" else None

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                if trt.parse_errors:
                    return False
                inputs, outputs = trt.network_io
                self.network.inputs = [StandInTensor(n, d, s) for n, (d, s) in inputs.items()]
                self.network.outputs = [StandInTensor(n, d, s) for n, (d, s) in outputs.items()]
                return True

            num_errors = property(lambda self: len(trt.parse_errors))

            def get_error(self, index):
                return trt.parse_errors[index]

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags=0):
                trt.network = StandInNetwork(flags)
                return trt.network

            def create_builder_config(self):
                trt.config = type("BuilderConfig", (), {})()
                trt.config.pools, trt.config.flags, trt.config.profiles = {}, [], []
                trt.config.set_memory_pool_limit = lambda pool, size: trt.config.pools.update({pool.name: size})
                trt.config.set_flag = trt.config.flags.append
                trt.config.add_optimization_profile = trt.config.profiles.append
                return trt.config

            def create_optimization_profile(self):
                profile = type("OptimizationProfile", (), {})()
                profile.shapes = {}
                profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
                return profile

            def build_serialized_network(self, network, config):
                trt.built.append((network, config))
                return b"PLAN"

        self.Runtime, self.OnnxParser, self.Builder = Runtime, OnnxParser, Builder

    def init_libnvinfer_plugins(self, logger, namespace):
        return True

    def get_plugin_registry(self):
        return FakeRegistry()


class StandInBuffers:
    """A buffer backend that hands out fake addresses and returns zeros of the shapes TensorRT reports."""

    executed = 0

    def __init__(self, device):
        self.device = device

    def on_device(self):
        import contextlib

        return contextlib.nullcontext()

    @staticmethod
    def dtype_of(array):
        return np.asarray(array).dtype.name

    def execute(self, runner, inputs, shapes, profile):
        StandInBuffers.executed += 1
        out_shapes = runner.prepare(shapes, profile, 7)
        names = list(inputs) + list(runner.io.outputs)
        runner.launch({name: 0x1000 * (i + 1) for i, name in enumerate(names)}, 7)
        return {name: np.zeros(out_shapes[name], np.dtype(dtype)) for name, (dtype, _) in runner.io.outputs.items()}


def _two_profiles(contract):
    return [build_profile(contract, ["input:1x3x64x64:2x3x64x64:4x3x128x128"]),
            build_profile(contract, ["input:8x3x64x64:8x3x64x64:16x3x64x64"])]


@pytest.fixture
def stand_in_tensorrt(monkeypatch, tmp_path):
    """(tensorrt stand-in holding a FULL engine with two profiles, plan path with its sidecar)."""
    monkeypatch.delenv(rt.PLUGINS_ENV, raising=False)
    profiles = _two_profiles(FULL)
    io = engine_io(profiles=profiles)
    trt = StandInTensorRT(engine=StandInEngine(io, FULL))
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    monkeypatch.setitem(rt._BUFFER_BACKENDS, "torch", StandInBuffers)
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"ENGINE")
    write_sidecar(plan, FULL, {"image_size": 64}, profiles, trt.__version__)
    return trt, plan


def test_engine_runner_checks_then_runs_on_the_matching_profile(stand_in_tensorrt):
    trt, plan = stand_in_tensorrt
    runner = EngineRunner(plan)
    assert runner.contract == FULL and runner.config == {"image_size": 64} and len(runner.io.profiles) == 2
    context = trt.engine.contexts[0]
    x = np.zeros((2, 3, 64, 64), np.float32)
    out = runner(input=x, exemplar=x)
    assert {k: v.shape for k, v in out.items()} == {"image": (2, 3, 64, 64), "input_mask": (2, 1, 16, 16),
                                                    "exemplar_mask": (2, 1, 16, 16)}
    assert context.calls == [("shape", "input", (2, 3, 64, 64)), ("shape", "exemplar", (2, 3, 64, 64)),
                             *[("address", n, 0x1000 * (i + 1)) for i, n in enumerate(
                                 ["input", "exemplar", "image", "input_mask", "exemplar_mask"])],
                             ("execute", 7)]
    big = np.zeros((8, 3, 64, 64), np.float32)
    runner(input=big, exemplar=big)                                   # only profile 1 covers batch 8
    assert ("profile", 1, 7) in context.calls
    executed, calls = StandInBuffers.executed, list(context.calls)
    for inputs, message in (
            ({"input": x.astype(np.float16), "exemplar": x}, "input must be float32, got float16"),
            ({"input": x.transpose(0, 2, 3, 1), "exemplar": x}, "input must have shape \\(batch, 3, height, width\\)"),
            ({"input": x[:, :, :60], "exemplar": x[:, :, :60]}, "not a multiple of 16"),
            ({"input": np.zeros((32, 3, 64, 64), np.float32), "exemplar": np.zeros((32, 3, 64, 64), np.float32)},
             "no optimization profile of the engine covers input 32x3x64x64"),
            ({"input": x}, "missing input\\(s\\) \\['exemplar'\\]")):
        with pytest.raises(ContractError, match=message) as err:
            runner(**inputs)
        assert str(err.value).count("\n") == 0                      # one line
    assert StandInBuffers.executed == executed and context.calls == calls   # nothing ran


def test_engine_runner_refuses_engines_that_do_not_fit(stand_in_tensorrt):
    trt, plan = stand_in_tensorrt
    trt.engine = StandInEngine(engine_io(image=("float16", (-1, 3, -1, -1))), FULL)
    with pytest.raises(ContractError, match="output image is float16, the contract says float32"):
        EngineRunner(plan)
    with pytest.raises(ContractError, match="missing input\\(s\\) \\['input_mask_in'\\]"):
        EngineRunner(plan, contract=IOContract.build(DIMS, Variant(masks=("input",))))
    custom = IOContract.build(DIMS, Variant(custom_ops=True))
    with pytest.raises(ContractError, match="not a TensorRT engine.*need the plugin library"):
        EngineRunner(b"not an engine", contract=custom)          # e.g. the plugin was not loaded


@pytest.mark.parametrize("version, float16_graph, flags", [
    ("10.13.0", False, 0),         # explicit batch always (EXPLICIT_BATCH is deprecated and ignored): weakly typed
    ("10.13.0", True, 1 << 1),     # float16 graph: strongly typed, so the float32 statistics stay float32
    ("11.1.0", True, 0),           # always strongly typed, no flag to give
    ("11.1.0", False, 0),
])
def test_network_flags_per_tensorrt_version(version, float16_graph, flags):
    from lmt_fast.export.tensorrt import network_flags

    assert network_flags(StandInTensorRT(version), float16_graph) == flags


def test_network_flags_refuse_tensorrt_9():
    from lmt_fast.export.tensorrt import EngineBuildError, network_flags

    with pytest.raises(EngineBuildError, match="TensorRT 9.3.0 is too old"):
        network_flags(StandInTensorRT("9.3.0"), False)


@pytest.mark.parametrize("version", ["10.13.0", "11.1.0"])
def test_build_engine_with_a_stand_in_tensorrt(version, monkeypatch, tmp_path):
    from lmt_fast.export.tensorrt import EngineBuildError

    half = IOContract.build(DIMS, Variant(dtype="float16"))
    io = engine_io("float16")
    trt = StandInTensorRT(version, network_io=(io.inputs, io.outputs))
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
    lib = tmp_path / "liblmt_trt_plugin.so"
    lib.write_bytes(b"")
    monkeypatch.setattr(rt, "_LOADED_PLUGINS", {})
    profiles = _two_profiles(half)
    plan = build_engine(tmp_path / "m.onnx", tmp_path / "out" / "m.plan", profiles, contract=half,
                        config={"image_size": 64}, workspace_mib=256, plugins=[lib], serialize_plugins=True)
    assert plan.read_bytes() == b"PLAN" and read_sidecar(plan)["tensorrt"] == version
    network, config = trt.built[0]
    assert network.flags == (1 << 1 if version.startswith("10.") else 0)
    assert config.pools == {"WORKSPACE": 256 << 20} and config.flags == []
    assert config.plugins_to_serialize == [str(lib.resolve())]
    assert [p.shapes["input"] for p in config.profiles] == [
        ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 128, 128)), ((8, 3, 64, 64), (8, 3, 64, 64), (16, 3, 64, 64))]
    with pytest.raises(EngineBuildError, match="graph is float16 already" if version.startswith("10.")
                       else "TensorRT 11 has no FP16 builder flag"):
        build_engine(tmp_path / "m.onnx", tmp_path / "x.plan", profiles, contract=half, fp16=True)
    with pytest.raises(ContractError, match="network parsed from .*does not fit.*output image is float16"):
        build_engine(tmp_path / "m.onnx", tmp_path / "x.plan", profiles, contract=FULL)   # a float32 contract
    trt.parse_errors = ["In node 12 (importFallbackPluginImporter): Plugin not found"]
    with pytest.raises(EngineBuildError, match="could not parse .*Plugin not found"):
        build_engine(tmp_path / "m.onnx", tmp_path / "x.plan", profiles, contract=half)
    assert not (tmp_path / "x.plan").exists()


# -- without TensorRT -----------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_errors_name_the_package(tmp_path):
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt' is not installed"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", [build_profile(FULL, default_size=64)])
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt'"):
        EngineRunner(tmp_path / "m.plan")
    with pytest.raises(ValueError, match="buffers must be one of"):
        EngineRunner(tmp_path / "m.plan", buffers="numba")


@pytest.mark.parametrize("buffers, install", [("cuda-python", "pip install cuda-python"),
                                              ("pycuda", "pip install pycuda")])
def test_torch_free_buffers_name_their_package_when_missing(buffers, install):
    try:
        rt._BUFFER_BACKENDS[buffers](0)
    except ImportError as exc:
        assert f"buffers='{buffers}' needs" in str(exc) and install in str(exc)
    except Exception as exc:   # installed: it got as far as asking the driver (no GPU here)
        pytest.skip(f"{buffers}'s package is installed here ({type(exc).__name__}: {exc})")
    else:
        pytest.skip(f"{buffers}'s package is installed and a GPU is present")


@pytest.fixture(scope="module")
def exported(styled_checkpoint, tmp_path_factory):
    """model.onnx of the styled checkpoint (from the session's export cache when test_export_onnx ran)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from lmt_fast.export.cache import cached_export
    from lmt_fast.io import load_checkpoint

    generator = load_checkpoint(styled_checkpoint).generator
    cache = tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"
    return {dtype: cached_export(generator, Variant(dtype=dtype), directory=cache) for dtype in ("float32",)}


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_cli_build_engine_without_tensorrt(run_cli, exported, tmp_path):
    plan = tmp_path / "m.plan"
    r = run_cli("build-engine", exported["float32"], "-o", plan, "--print-trtexec", "--max-batch", "4")
    assert r.code == 0 and r.out.startswith("trtexec --onnx=")
    assert "--maxShapes=input:4x3x64x64,exemplar:4x3x64x64" in r.out      # the model's image size by default
    r = run_cli("build-engine", exported["float32"], "-o", plan, "--profile", "input:1x3x64x64:1x3x64x64:2x3x128x128")
    assert r.code == 2 and len(r.err_lines) == 1 and "Traceback" not in r.err
    assert "'tensorrt' is not installed" in r.err and "trtexec --onnx=" in r.err and not plan.exists()
    r = run_cli("build-engine", exported["float32"], "-o", plan, "--profile", "input:1x3x64x64:1x3x64x64:2x3x128x120")
    assert r.code == 2 and "multiples of 16" in r.err


# -- plugin libraries (a stand-in for tensorrt's plugin registry) -----------------------------------------------

class FakeRegistry:
    def __init__(self, handle=True, registered=False):
        self.handle, self.registered, self.loaded = handle, registered, []

    def load_library(self, path):
        self.loaded.append(path)
        return object() if self.handle else None

    def get_creator(self, name, version, namespace):
        return object() if self.registered and (name, version, namespace) == rt.REGION_ADAIN_CREATOR else None


class FakeTensorRT:
    def __init__(self, registry):
        self.registry = registry

    def get_plugin_registry(self):
        return self.registry


def test_plugin_libraries_load_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "_LOADED_PLUGINS", {})
    lib = tmp_path / "liblmt_trt_plugin.so"
    lib.write_bytes(b"")
    registry = FakeRegistry()
    assert load_plugins(FakeTensorRT(registry), [lib]) == [lib]
    assert load_plugins(FakeTensorRT(registry), [str(lib)]) == [lib]
    assert registry.loaded == [str(lib.resolve())]
    monkeypatch.setenv(rt.PLUGINS_ENV, os.pathsep.join([str(lib), ""]))
    assert load_plugins(FakeTensorRT(registry), None) == [lib]           # from $LMT_FAST_TRT_PLUGINS
    assert load_plugins(FakeTensorRT(registry), []) == []                # explicit: none
    assert registry.loaded == [str(lib.resolve())]


def test_plugin_library_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "_LOADED_PLUGINS", {})
    monkeypatch.setenv(rt.PLUGINS_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(PluginLoadError, match="plugin library not found: .*missing.so \\(from \\$LMT_FAST_TRT_PLUGINS\\)"):
        load_plugins(FakeTensorRT(FakeRegistry()), None)
    lib = tmp_path / "lib.so"
    lib.write_bytes(b"")
    with pytest.raises(PluginLoadError, match="could not load the plugin library .*lib.so"):
        load_plugins(FakeTensorRT(FakeRegistry(handle=False)), [lib])
    # refused because its creator is registered already (e.g. build_engine loaded it first): fine
    assert load_plugins(FakeTensorRT(FakeRegistry(handle=False, registered=True)), [lib]) == [lib]


# -- engines for the Translator: descriptions and configs (no TensorRT needed) -----------------------------------

def test_engine_paths(tmp_path):
    (tmp_path / "b.engine").write_bytes(b"x")
    (tmp_path / "a.plan").write_bytes(b"x")
    (tmp_path / "a.plan.json").write_text("{}")
    assert engine_files(tmp_path) == [tmp_path / "a.plan", tmp_path / "b.engine"]
    assert engine_files(tmp_path / "a.plan") == [tmp_path / "a.plan"]
    assert is_engine_path(tmp_path) and is_engine_path(tmp_path / "x.engine") and not is_engine_path(tmp_path / "x.onnx")
    (tmp_path / "config.json").write_text("{}")
    assert not is_engine_path(tmp_path)                        # a checkpoint directory
    with pytest.raises(FileNotFoundError, match="no TensorRT engine at"):
        engine_files(tmp_path / "none.plan")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TensorRT engine \\(\\*.plan, \\*.engine\\) in"):
        engine_files(tmp_path / "empty")


def test_engine_description_from_sidecar_onnx_or_nothing(exported, tmp_path):
    from lmt_fast.export.onnx import read_metadata

    contract, config, _ = read_metadata(exported["float32"])
    # trtexec's case: no sidecar, the ONNX it was built from beside it under the same name
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    (tmp_path / "model.onnx").write_bytes(exported["float32"].read_bytes())
    d = describe_engine(plan)
    assert d.contract == contract and d.config == config and d.source.endswith("model.onnx")
    # nothing known
    other = tmp_path / "other.plan"
    other.write_bytes(b"engine")
    d = describe_engine(other)
    assert d.contract is None and d.config is None and d.source == ""
    with pytest.raises(ContractError, match="model config of other.plan is unknown.*write_engine_sidecar"):
        resolve_config([d])
    assert resolve_config([d], config=config) == config
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        describe_engine(other, onnx=tmp_path / "nope.onnx")
    # write_engine_sidecar records the ONNX's contract and config once
    write_engine_sidecar(other, exported["float32"])
    d = describe_engine(other)
    assert d.contract == contract and d.config == config and d.source == "other.plan.json"
    with pytest.raises(ContractError, match="different models"):
        resolve_config([d], config={**config, "base_dim": config["base_dim"] + 1})


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_generator_without_tensorrt_names_the_package(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt' is not installed"):
        TensorRTGenerator.from_plan(plan)
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt'"):
        EngineRunner(plan, plugins=[tmp_path / "lib.so"])


# -- TensorRTGenerator's interface over stand-in engines ------------------------------------------------------

class OrtEngine:
    """Stands in for an EngineRunner with torch buffers: the same request checks (contract and profile), then
    the engine's graph run by onnxruntime; torch tensors in and out."""

    def __init__(self, onnx_path, max_batch=4):
        from lmt_fast.runtime.onnxruntime import OnnxSession

        self.session = OnnxSession(onnx_path)
        self.contract = self.session.contract
        profile = build_profile(self.contract, default_size=64, max_batch=max_batch)
        self.io = EngineIO({}, {}, (profile,))
        self.seen = []

    def run(self, inputs):
        import torch

        shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        dtypes = {name: str(t.dtype).replace("torch.", "") for name, t in inputs.items()}
        check_request(self.contract, self.io, shapes, dtypes)
        self.seen.append({name: (str(t.dtype), t.device.type, t.is_contiguous()) for name, t in inputs.items()})
        out = self.session.run({name: t.numpy() for name, t in inputs.items()})
        return {name: torch.from_numpy(value) for name, value in out.items()}


@pytest.fixture(scope="module")
def stand_in_generator(styled_checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lmt_fast.export.cache import cached_export
    from lmt_fast.io import load_checkpoint

    generator = load_checkpoint(styled_checkpoint).generator.eval()
    cache = tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"
    engines = {Variant(part): OrtEngine(cached_export(generator, Variant(part), directory=cache))
               for part in ("full", "style_encoder", "translate")}
    return generator, TensorRTGenerator(generator.config, engines, device="cpu", engine_device="cpu",
                                        describe="stand-in engines")


def _rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_generator_interface_matches_the_torch_generator(stand_in_generator):
    import torch

    generator, engines = stand_in_generator
    assert engines.backend == "tensorrt" and engines.dtype == "float32" and engines.config == generator.config
    assert "full-float32" in repr(engines)
    g = torch.Generator().manual_seed(0)
    x, e = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        want = generator(x, e)
        got = engines(x.double(), e)            # inputs are cast to the engines' dtype
        for key in ("image", "input_mask", "exemplar_mask"):
            assert _rel(getattr(got, key), getattr(want, key)) <= 1e-4, key
        full = engines.runner(Variant("full"))
        assert full.seen[-1]["input"] == ("torch.float32", "cpu", True)
        code_want = generator.encode_exemplar(e[:1])
        code = engines.encode_exemplar(e[:1])
        assert code.content.shape == (1, 0, 1, 1)
        assert _rel(code.style_fg, code_want.style_fg) <= 1e-4 and _rel(code.attention, code_want.attention) <= 1e-4
        out_want = generator.translate_encoded(x, code_want)
        out = engines.translate_encoded(x, code)   # one exemplar serves the batch of 2
        assert _rel(out.image, out_want.image) <= 1e-4 and out.exemplar_mask.shape[0] == 2


def test_generator_errors_name_the_engine_and_the_fix(stand_in_generator):
    import torch

    from lmt_fast.runtime.onnxruntime import MissingGraphError

    _, engines = stand_in_generator
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(MissingGraphError, match="no full engine with masks \\['input'\\].*--with-masks input.*"
                                                "lmt-fast build-engine"):
        engines(x, x, input_mask=torch.ones(1, 1, 16, 16))
    with pytest.raises(ContractError, match="stand-in engines \\(full-float32 engine\\): .*no optimization profile "
                                            "of the engine covers input 8x3x64x64"):
        engines(torch.zeros(8, 3, 64, 64), torch.zeros(8, 3, 64, 64))
    with pytest.raises(ContractError, match="height 60 .*not a multiple of 16"):
        engines(torch.zeros(1, 3, 60, 64), torch.zeros(1, 3, 60, 64))
    with pytest.raises(ContractError, match="mix dtypes"):
        TensorRTGenerator(None, {Variant("full"): None, Variant("translate", dtype="float16"): None},
                          device="cpu", engine_device="cpu")


# -- with TensorRT and a GPU ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engines(exported, styled_checkpoint, tmp_path_factory):
    from lmt_fast.export.cache import cached_export
    from lmt_fast.export.onnx import read_metadata
    from lmt_fast.io import load_checkpoint

    folder = tmp_path_factory.mktemp("engines")
    generator = load_checkpoint(styled_checkpoint).generator
    cache = tmp_path_factory.getbasetemp() / "lmt_fast_onnx_cache"
    onnx_files = {"float32": exported["float32"],
                  "float16": cached_export(generator, Variant(dtype="float16"), directory=cache),
                  "uint8": cached_export(generator, Variant(io="uint8"), directory=cache)}
    plans = {}
    for name, path in onnx_files.items():
        contract, config, _ = read_metadata(path)
        shapes = "1x64x64x3:2x64x64x3:4x128x128x3" if name == "uint8" else "1x3x64x64:2x3x64x64:4x3x128x128"
        profile = build_profile(contract, [f"input:{shapes}"])
        plans[name] = build_engine(path, folder / f"{name}.plan", [profile], contract=contract, config=config)
    return generator, onnx_files, plans


def _torch_reference(generator, x, e):
    import torch

    with torch.no_grad():
        out = generator.to("cuda")(x, e)
    return out


@needs_gpu
@pytest.mark.parametrize("dtype, tolerance", [("float32", 5e-3), ("float16", 2e-2)])
def test_engine_matches_pytorch_with_torch_buffers(engines, dtype, tolerance):
    import torch

    generator, _, plans = engines
    runner = EngineRunner(plans[dtype])
    assert runner.contract.variant.dtype == dtype and read_sidecar(plans[dtype])["config"]["image_size"] == 64
    for n, h, w in [(1, 64, 64), (3, 128, 96)]:
        g = torch.Generator().manual_seed(n)
        x, e = (torch.rand(n, 3, h, w, generator=g) * 2 - 1 for _ in range(2))
        want = _torch_reference(generator, x.cuda(), e.cuda())
        t = getattr(torch, dtype)
        out = runner(input=x.cuda().to(t), exemplar=e.cuda().to(t))
        torch.cuda.synchronize()
        for key, ref in (("image", want.image), ("input_mask", want.input_mask), ("exemplar_mask", want.exemplar_mask)):
            got = out[key].float()
            assert got.shape == ref.shape and got.is_cuda
            assert ((got - ref).abs().max() / ref.abs().max()).item() <= tolerance, key


@needs_gpu
def test_engine_rejects_bad_requests_with_one_clear_error(engines):
    import torch

    runner = EngineRunner(engines[2]["float32"])
    x = torch.zeros(8, 3, 64, 64, device="cuda")
    with pytest.raises(ContractError, match="no optimization profile"):
        runner(input=x, exemplar=x)
    with pytest.raises(ContractError, match="must be float32, got float16"):
        runner(input=x[:2].half(), exemplar=x[:2])
    with pytest.raises(ContractError, match="not a multiple of 16"):
        runner(input=x[:2, :, :60], exemplar=x[:2, :, :60])


@needs_gpu
def test_engine_io_must_fit_the_contract_it_is_given(engines):
    wrong = IOContract.build(DIMS, Variant(masks=("input",)))
    with pytest.raises(ContractError, match="missing input\\(s\\) \\['input_mask_in'\\]"):
        EngineRunner(engines[2]["float32"], contract=wrong)


@needs_gpu
def test_uint8_engine(engines):
    import torch

    generator, _, plans = engines
    runner = EngineRunner(plans["uint8"])
    u = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, device="cuda")
    out = runner(input=u, exemplar=u.flip(0))
    x = u.permute(0, 3, 1, 2).float() / 127.5 - 1
    want = _torch_reference(generator, x, x.flip(0)).image
    want = ((want.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1)
    assert out["image"].dtype == torch.uint8 and (out["image"].float() - want).abs().max().item() <= 2


@needs_gpu
@pytest.mark.parametrize("buffers", ["cuda-python", "pycuda"])
def test_torch_free_buffers(engines, buffers):
    try:
        rt._BUFFER_BACKENDS[buffers](0)
    except ImportError as exc:   # names the package to install
        pytest.skip(str(exc))
    runner_np = EngineRunner(engines[2]["float32"], buffers=buffers)
    runner_torch = EngineRunner(engines[2]["float32"])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    got = runner_np(input=x, exemplar=x[::-1].copy())
    want = runner_torch(input=x, exemplar=x[::-1].copy())
    assert isinstance(got["image"], np.ndarray)
    np.testing.assert_allclose(got["image"], want["image"].cpu().numpy(), rtol=1e-5, atol=1e-5)


# -- TensorRTGenerator on real engines (tensorrt and a GPU) ----------------------------------------------------

@needs_gpu
def test_generator_over_engines_matches_pytorch(engines, tmp_path):
    import shutil

    import torch

    generator, onnx_files, plans = engines
    trt_generator = TensorRTGenerator.from_plan(plans["float32"], device="cpu")   # contract, config: the sidecar
    assert trt_generator.config == generator.config and trt_generator.dtype == "float32"
    x, e = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (1, 2))
    want = _torch_reference(generator, x.cuda(), e.cuda())
    got = trt_generator(x, e)                          # CPU tensors in and out, the engine on the GPU
    assert got.image.device.type == "cpu" and trt_generator.engine_device.type == "cuda"
    assert ((got.image - want.image.cpu()).abs().max() / want.image.abs().max()).item() <= 5e-3
    # an engine built by trtexec: no sidecar, the ONNX it came from beside it
    folder = tmp_path / "trtexec"
    folder.mkdir()
    shutil.copyfile(plans["float32"], folder / "model.plan")
    shutil.copyfile(onnx_files["float32"], folder / "model.onnx")
    from_onnx = TensorRTGenerator.from_plan(folder, device="cuda")
    assert from_onnx.config == generator.config and from_onnx(x.cuda(), e.cuda()).image.is_cuda
    (folder / "model.onnx").unlink()
    with pytest.raises(ContractError, match="model config of model.plan is unknown"):
        TensorRTGenerator.from_plan(folder)
    inferred = TensorRTGenerator.from_plan(folder, config=generator.config)   # contract from names, sizes from config
    assert inferred.runner(Variant()).contract.dims.size_multiple == generator.config.size_multiple


@needs_gpu
def test_translator_serves_an_engine(engines):
    from lmt_fast import translator as translator_module

    if "tensorrt" not in getattr(translator_module, "RUNTIME_BACKENDS", ()):
        pytest.skip("lmt_fast/translator.py does not route .plan files to TensorRTGenerator yet")
    import torch

    generator, _, plans = engines
    t = translator_module.Translator.load(plans["float32"])
    assert t.backend == "tensorrt" and t.config == generator.config
    eager = translator_module.Translator(generator)
    x, e = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (3, 4))
    got, want = t.translate(x, e), eager.translate(x, e)
    assert ((got.image - want.image).abs().max()).item() <= 1e-2
