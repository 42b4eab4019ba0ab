"""Run TensorRT engines built from lmt_fast ONNX exports, with checked inputs.

    from lmt_fast.runtime.tensorrt import EngineRunner, TensorRTGenerator
    runner = EngineRunner("model.plan")                 # torch CUDA tensors as buffers
    out = runner(input=x, exemplar=e)                    # {"image": ..., "input_mask": ..., "exemplar_mask": ...}
    generator = TensorRTGenerator.from_plan("engines/")  # the Translator's generator interface over engines

Engines built from graphs exported with ``--custom-ops`` need the plugin library (csrc/trt, built by
lmt_fast.export.plugin_build): ``plugins=["liblmt_trt_plugin.so"]``, or the environment variable
``LMT_FAST_TRT_PLUGINS`` (paths separated by os.pathsep), which every loader here reads when no
``plugins`` are given. Each library is loaded once per process (IPluginRegistry.load_library).

buffers:
    "torch"        inputs: torch tensors (moved to the engine's GPU when needed) or numpy arrays; outputs:
                   torch CUDA tensors, computed on torch's current stream (no synchronisation, like any
                   torch op).
    "cuda-python"  torch-free: numpy in, numpy out, through cuda-python's runtime API (cuda.bindings).
    "pycuda"       torch-free: numpy in, numpy out, through pycuda (on the device's primary context).

On load the engine's inputs and outputs are checked against the I/O contract: the one recorded in
``<plan>.json`` by ``lmt-fast build-engine``, else one given as ``contract=``, else one inferred from the
tensor names (engines built with trtexec; image sizes are then not checked against the model's
multiple). Every request is checked before it runs: names, dtypes, shapes, and an optimization profile
covering the shapes; a bad request raises one ContractError that names the problem.

TensorRTGenerator (what ``Translator.load("model.plan")`` runs) also needs the model's config (image size,
size multiple, mask scale). It comes from the sidecar ``<plan>.json``; for an engine built by trtexec,
from the ONNX file it was built from (``onnx=``, or ``<plan stem>.onnx`` beside the engine), or from
``config=``. ``write_engine_sidecar(plan, onnx)`` records both for a trtexec engine once.

This module imports without tensorrt, torch, cuda-python or pycuda; EngineRunner raises
TensorRTUnavailableError (or ImportError naming the buffer package) when what it needs is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from lmt_fast.export.contract import ContractError, IOContract, ModelDims, Variant
from lmt_fast.export.profiles import Profile, ShapeRange, select_profile

BUFFERS = ("torch", "cuda-python", "pycuda")
ENGINE_SUFFIXES = (".plan", ".engine")
PLUGINS_ENV = "LMT_FAST_TRT_PLUGINS"
PLUGIN_HINT = ("engines with lmt::RegionAdaIN nodes (exported with --custom-ops) need the plugin library: "
               "build it with `python -m lmt_fast.export.plugin_build DIR` and pass plugins=[DIR/liblmt_trt_plugin.so] "
               f"or set {PLUGINS_ENV}")
# The RegionAdaIN creator (csrc/trt): name, version, namespace.
REGION_ADAIN_CREATOR = ("RegionAdaIN", "1", "lmt")
_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "UINT8": "uint8", "INT8": "int8",
                "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def dtype_name(trt_dtype) -> str:
    """tensorrt.DataType -> numpy-style name ("float32", "float16", "uint8", ...)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    return _DTYPE_NAMES.get(name, name.lower())


@dataclass(frozen=True)
class EngineIO:
    """An engine's tensors and profiles as plain data (what the checks need; testable without a GPU)."""

    inputs: Mapping[str, tuple]     # name -> (dtype name, shape with -1 for dynamic sizes)
    outputs: Mapping[str, tuple]
    profiles: tuple                 # Profile per optimization profile

    @classmethod
    def of_engine(cls, engine, trt) -> "EngineIO":
        inputs, outputs = {}, {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            entry = (dtype_name(engine.get_tensor_dtype(name)), tuple(engine.get_tensor_shape(name)))
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs)[name] = entry
        profiles = []
        for p in range(engine.num_optimization_profiles):
            ranges = {name: ShapeRange(*(tuple(s) for s in engine.get_tensor_profile_shape(name, p)))
                      for name in inputs}
            profiles.append(Profile(ranges))
        return cls(inputs, outputs, tuple(profiles))


def infer_contract(io: EngineIO) -> IOContract:
    """The contract an engine's tensor names and dtypes imply (for engines without a <plan>.json).

    The model's size multiple is unknown then (taken as 1), so image sizes are not checked against it.
    """
    names = set(io.inputs)
    if {"input", "exemplar"} <= names:
        part = "full"
    elif "exemplar_attention" in names:
        part = "translate"
    elif "exemplar" in names:
        part = "style_encoder"
    else:
        raise ContractError(f"the engine's inputs {sorted(names)} are not those of an lmt_fast graph")
    masks = tuple(n[: -len("_mask_in")] for n in names if n.endswith("_mask_in"))
    tensors = {**io.inputs, **io.outputs}
    image = io.inputs.get("input") or io.inputs.get("exemplar")
    floats = [dtype for dtype, _ in tensors.values() if dtype in ("float32", "float16")]
    content_dim = int(tensors["exemplar_attention"][1][1]) if "exemplar_attention" in tensors else 1
    style_dim = int(tensors["exemplar_style"][1][1]) if "exemplar_style" in tensors else 1
    try:
        variant = Variant(part, masks, floats[0] if floats else "float32", "uint8" if image[0] == "uint8" else "float")
    except ValueError as exc:
        raise ContractError(f"the engine's tensors do not form an lmt_fast graph: {exc}") from None
    return IOContract.build(ModelDims(1, 1, max(content_dim, 1), max(style_dim, 1)), variant)


# -- plugin libraries -----------------------------------------------------------------------------------

class PluginLoadError(RuntimeError):
    """A TensorRT plugin library could not be found or loaded; the message names it."""


_LOADED_PLUGINS: dict[str, object] = {}
_PLUGIN_LOCK = threading.Lock()


def plugin_paths(plugins: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """The plugin libraries to load: `plugins`, or else those listed in $LMT_FAST_TRT_PLUGINS."""
    if plugins is None:
        plugins = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p.strip()]
    elif isinstance(plugins, (str, os.PathLike)):
        plugins = [plugins]
    return [Path(p) for p in plugins]


def _creator_registered(registry, name: str, version: str, namespace: str) -> bool:
    for method in ("get_creator", "get_plugin_creator"):
        lookup = getattr(registry, method, None)
        if lookup is None:
            continue
        try:
            if lookup(name, version, namespace) is not None:
                return True
        except Exception:  # older bindings: other signatures
            continue
    return False


def load_plugins(trt, plugins: Sequence[str | os.PathLike] | None = None) -> list[Path]:
    """Load plugin libraries into TensorRT's plugin registry, each once per process; returns their paths.

    The registry refuses a library whose creators are registered already (it returns no handle); that is
    not an error when the library's RegionAdaIN creator is what is registered (e.g. build_engine loaded
    it first). Raises PluginLoadError naming the library otherwise.
    """
    paths = plugin_paths(plugins)
    with _PLUGIN_LOCK:
        for path in paths:
            key = str(path.resolve())
            if key in _LOADED_PLUGINS:
                continue
            if not path.is_file():
                source = f" (from ${PLUGINS_ENV})" if plugins is None else ""
                raise PluginLoadError(f"TensorRT plugin library not found: {path}{source}")
            registry = trt.get_plugin_registry()
            handle = registry.load_library(key)
            if handle is None and not _creator_registered(registry, *REGION_ADAIN_CREATOR):
                raise PluginLoadError(f"TensorRT could not load the plugin library {path} (see TensorRT's log: a "
                                      "library built for another TensorRT major version, missing entry points "
                                      "getCreators / setLoggerFinder, or creators registered already)")
            _LOADED_PLUGINS[key] = handle
    return paths


class EngineRunner:
    """One deserialized engine with its contract, profiles and execution context. ``runner(**inputs)``
    checks the request (one ContractError naming every problem), selects the optimization profile that
    covers it, and runs through the buffer backend chosen by ``buffers`` (see the module docstring)."""

    def __init__(self, plan: str | os.PathLike | bytes, buffers: str = "torch", device: int = 0,
                 contract: IOContract | None = None, plugins: Sequence[str | os.PathLike] | None = None):
        """plan: a serialized engine (path or bytes). plugins: plugin libraries to load first (default:
        $LMT_FAST_TRT_PLUGINS), e.g. liblmt_trt_plugin.so for engines of --custom-ops exports."""
        from lmt_fast.export.tensorrt import import_tensorrt, read_sidecar

        if buffers not in BUFFERS:
            raise ValueError(f"buffers must be one of {BUFFERS}, got {buffers!r}")
        self.trt = trt = import_tensorrt()
        self.buffers = buffers
        self.device = int(device)
        self._backend = _BUFFER_BACKENDS[buffers](self.device)
        data = plan if isinstance(plan, bytes) else Path(plan).read_bytes()
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")
        self.plugins = load_plugins(trt, plugins)
        sidecar = None if isinstance(plan, bytes) else read_sidecar(plan)
        if contract is None and sidecar and sidecar.get("contract"):
            contract = IOContract.from_json(json.dumps(sidecar["contract"]))
        with self._backend.on_device():   # the engine and its context live on `device`
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(data)
            self.context = self.engine.create_execution_context() if self.engine is not None else None
        if self.engine is None:
            name = plan if not isinstance(plan, bytes) else "the plan"
            needs_plugin = contract is not None and contract.variant.custom_ops
            hint = f"; {PLUGIN_HINT}" if needs_plugin and not self.plugins else \
                "; if it has plugin layers, load their libraries with plugins=[...]" if not self.plugins else ""
            raise ContractError(f"{name} is not a TensorRT engine this TensorRT ({trt.__version__}) and GPU can "
                                f"load (built by another TensorRT version, or for another GPU?){hint}")
        self.io = EngineIO.of_engine(self.engine, trt)
        self.contract = contract or infer_contract(self.io)
        self.config = (sidecar or {}).get("config")
        self.contract.check_io(self.io.inputs, self.io.outputs)
        self._profile = 0

    def __call__(self, **inputs):
        return self.run(inputs)

    def check(self, shapes: Mapping[str, tuple], dtypes: Mapping[str, str]) -> tuple[dict, int]:
        """Validate a request; returns (contract symbol values, profile index)."""
        return check_request(self.contract, self.io, shapes, dtypes)

    def run(self, inputs: Mapping) -> dict:
        shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        dtypes = {name: self._backend.dtype_of(t) for name, t in inputs.items()}
        _, profile = self.check(shapes, dtypes)   # one ContractError before anything touches the GPU
        with self._backend.on_device():
            return self._backend.execute(self, inputs, shapes, profile)

    # used by the buffer backends
    def prepare(self, shapes: Mapping[str, tuple], profile: int, stream_handle: int) -> dict:
        """Select the profile and input shapes; returns the output shapes TensorRT infers."""
        if profile != self._profile:
            self.context.set_optimization_profile_async(profile, stream_handle)
            self._profile = profile
        for name, shape in shapes.items():
            self.context.set_input_shape(name, shape)
        return {name: tuple(self.context.get_tensor_shape(name)) for name in self.io.outputs}

    def launch(self, addresses: Mapping[str, int], stream_handle: int) -> None:
        for name, address in addresses.items():
            self.context.set_tensor_address(name, int(address))
        if not self.context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")


def check_request(contract: IOContract, io: EngineIO, shapes: Mapping[str, tuple],
                  dtypes: Mapping[str, str]) -> tuple[dict, int]:
    """Contract check (names, dtypes, shapes), then the first profile that covers the shapes."""
    symbols = contract.resolve(shapes, dtypes)
    return symbols, select_profile(io.profiles, shapes)


# -- engines as the Translator's generator -----------------------------------------------------------------

@dataclass(frozen=True)
class EngineDescription:
    """What is known about one engine file before TensorRT opens it."""

    path: Path
    contract: IOContract | None   # None: to be inferred from the engine's tensor names
    config: dict | None           # LOMITConfig.to_dict() of the exported model
    source: str                   # where they come from: the sidecar, an ONNX file, or "" (nowhere)


def is_engine_path(path: str | os.PathLike) -> bool:
    """A .plan / .engine file, or a directory holding engines (and no checkpoint config.json)."""
    path = Path(path)
    if path.is_dir():
        return not (path / "config.json").exists() and any(p.suffix in ENGINE_SUFFIXES for p in path.iterdir())
    return path.suffix in ENGINE_SUFFIXES


def engine_files(path: str | os.PathLike) -> list[Path]:
    """The engine at `path`, or every *.plan / *.engine file of a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in ENGINE_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"no TensorRT engine ({', '.join('*' + s for s in ENGINE_SUFFIXES)}) in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no TensorRT engine at {path}")
    return [path]


def describe_engine(plan: str | os.PathLike, onnx: str | os.PathLike | None = None) -> EngineDescription:
    """Contract and model config of an engine: from <plan>.json (lmt-fast build-engine), else from the ONNX
    file it was built from (`onnx`, or <plan stem>.onnx beside it: the usual trtexec case), else unknown."""
    from lmt_fast.export.tensorrt import read_sidecar, sidecar_path

    plan = Path(plan)
    sidecar = read_sidecar(plan)
    if sidecar and sidecar.get("contract"):
        return EngineDescription(plan, IOContract.from_json(json.dumps(sidecar["contract"])), sidecar.get("config"),
                                 sidecar_path(plan).name)
    candidate = Path(onnx) if onnx is not None else plan.with_suffix(".onnx")
    if candidate.is_file():
        from lmt_fast.export.onnx import read_metadata

        contract, config, _ = read_metadata(candidate)
        return EngineDescription(plan, contract, config, str(candidate))
    if onnx is not None:
        raise FileNotFoundError(f"ONNX model not found: {onnx}")
    return EngineDescription(plan, None, (sidecar or {}).get("config"), sidecar_path(plan).name if sidecar else "")


def write_engine_sidecar(plan: str | os.PathLike, onnx: str | os.PathLike,
                         profiles: Sequence[Profile] = ()) -> Path:
    """Write <plan>.json for an engine built from `onnx` outside lmt_fast (trtexec), from the ONNX file's
    lmt_fast metadata, so that EngineRunner / TensorRTGenerator know its contract and model config."""
    from lmt_fast.export.onnx import read_metadata
    from lmt_fast.export.tensorrt import write_sidecar

    contract, config, _ = read_metadata(onnx)
    return write_sidecar(plan, contract, config, profiles, "unknown (built outside lmt_fast)")


def _config_dict(config) -> dict | None:
    if config is None or isinstance(config, Mapping):
        return None if config is None else dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"config must be a LOMITConfig or a dict, got {type(config).__name__}")


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def resolve_config(descriptions: Sequence[EngineDescription], config=None) -> dict:
    """The one model config of a set of engines (recorded or given); ContractError when there is none or
    the engines come from different models."""
    given = _config_dict(config)
    recorded = {str(d.path): d.config for d in descriptions if d.config is not None}
    configs = list(recorded.values()) + ([given] if given is not None else [])
    if not configs:
        names = ", ".join(d.path.name for d in descriptions)
        raise ContractError(f"the model config of {names} is unknown: there is no <plan>.json (written by lmt-fast "
                            "build-engine) and no ONNX file of the same name beside the engine. Put the .onnx the "
                            "engine was built from next to it, pass onnx= or config=, or record it once with "
                            "lmt_fast.runtime.tensorrt.write_engine_sidecar(plan, onnx)")
    if any(not _same(c, configs[0]) for c in configs[1:]):
        sources = sorted(recorded) + (["config="] if given is not None else [])
        raise ContractError(f"the engines come from different models (their configs differ: {', '.join(sources)}); "
                            "keep one model's engines per directory")
    return configs[0]


class TensorRTGenerator:
    """LOMITGenerator's inference methods (``__call__``, ``encode_exemplar``, ``translate_encoded``) computed by
    TensorRT engines: the interface OnnxRuntimeGenerator offers, for the Translator.

    One engine per graph: model.plan (part "full"), and/or style_encoder.plan + translate.plan (exemplar
    cached), with or without mask inputs, in one dtype. Inputs and outputs are torch tensors: inputs are
    cast to the engines' dtype and moved to `engine_device` (a CUDA device; the engines use torch CUDA
    buffers on torch's current stream), outputs come back on `device`. Requests are checked against each
    engine's contract and profiles first (ContractError naming the problem: shape, size multiple, or no
    optimization profile covering the shapes).
    """

    backend = "tensorrt"

    def __init__(self, config, runners: Mapping[Variant, object], device="cuda", engine_device=None,
                 describe: str = "the engines"):
        """runners: Variant(part, masks, dtype) -> an EngineRunner (or anything with .contract and .run(dict))."""
        import torch

        if not runners:
            raise ContractError(f"{describe}: no engine to run")
        dtypes = sorted({v.dtype for v in runners})
        if len(dtypes) > 1:
            raise ContractError(f"{describe} mix dtypes {dtypes}; keep the engines of one dtype together")
        self.config = config
        self.dtype = dtypes[0]
        self.device = torch.device(device)
        self.engine_device = torch.device(engine_device) if engine_device is not None else _engine_device(self.device)
        self._runners = dict(runners)
        self._describe = describe

    @classmethod
    def from_plan(cls, path: str | os.PathLike, device="cuda", plugins: Sequence[str | os.PathLike] | None = None,
                  config=None, onnx: str | os.PathLike | None = None) -> "TensorRTGenerator":
        """Engines from one .plan / .engine file, or from every engine of a directory (one model).

        plugins: plugin libraries (default $LMT_FAST_TRT_PLUGINS); config / onnx: for engines without a
        <plan>.json (see describe_engine). Engines with uint8 I/O (--io uint8) are for serving and skipped.
        """
        from lmt_fast.export.tensorrt import import_tensorrt
        from lmt_fast.models import LOMITConfig

        files = engine_files(path)
        import_tensorrt()  # the first thing missing, if anything is
        if onnx is not None and len(files) > 1:
            raise ValueError("onnx= describes one engine; for a directory put each engine's .onnx beside it")
        descriptions = [describe_engine(f, onnx) for f in files]
        lomit_config = LOMITConfig.from_dict(resolve_config(descriptions, config))
        engine_device = _engine_device(device)
        runners: dict[Variant, EngineRunner] = {}
        skipped = []
        for d in descriptions:
            runner = EngineRunner(d.path, "torch", engine_device.index or 0, d.contract, plugins)
            if d.contract is None:  # inferred from tensor names: give it the model's real sizes
                contract = IOContract.build(lomit_config, runner.contract.variant)
                contract.check_io(runner.io.inputs, runner.io.outputs, what=f"engine {d.path.name}")
                runner.contract = contract
            v = runner.contract.variant
            if v.io != "float":
                skipped.append(d.path.name)
                continue
            key = Variant(v.part, v.masks, v.dtype)
            if key in runners:
                raise ContractError(f"{path} holds two engines for the {key.tag} graph; keep one")
            runners[key] = runner
        if not runners:
            raise ContractError(f"{path} holds no engine the Translator can run: it needs float I/O, and "
                                f"{', '.join(skipped)} take uint8 images (--io uint8 engines are for serving)")
        return cls(lomit_config, runners, device, engine_device, str(path))

    @property
    def variants(self) -> list[Variant]:
        return sorted(self._runners, key=lambda v: v.tag)

    # -- the generator interface -------------------------------------------------------------------
    def __call__(self, x_in, x_ex, input_mask=None, exemplar_mask=None):
        """LOMITGenerator.forward."""
        from lmt_fast.models import GeneratorOutput
        from lmt_fast.runtime.onnxruntime import _roles

        masks = {"input_mask_in": input_mask, "exemplar_mask_in": exemplar_mask}
        out = self._run(Variant("full", _roles(masks)), {"input": x_in, "exemplar": x_ex, **masks})
        return GeneratorOutput(out["image"], out["input_mask"], out["exemplar_mask"])

    def encode_exemplar(self, x_ex, exemplar_mask=None):
        """LOMITGenerator.encode_exemplar; ExemplarCode.content is an empty (N, 0, 1, 1) tensor (the graph
        does not return the exemplar's content code; translation does not use it)."""
        from lmt_fast.models import ExemplarCode
        from lmt_fast.runtime.onnxruntime import _roles

        masks = {"exemplar_mask_in": exemplar_mask}
        out = self._run(Variant("style_encoder", _roles(masks)), {"exemplar": x_ex, **masks})
        attention = out["exemplar_attention"]
        content = attention.new_empty((attention.shape[0], 0, 1, 1))
        return ExemplarCode(content, attention, out["exemplar_mask"], out["exemplar_style"])

    def translate_encoded(self, x_in, exemplar, input_mask=None):
        """LOMITGenerator.translate_encoded; a single encoded exemplar serves every input of the batch."""
        from lmt_fast.models import GeneratorOutput
        from lmt_fast.runtime.onnxruntime import _roles

        exemplar = exemplar.expand(x_in.shape[0])
        masks = {"input_mask_in": input_mask}
        feeds = {"input": x_in, "exemplar_attention": exemplar.attention, "exemplar_style": exemplar.style_fg,
                 **masks}
        out = self._run(Variant("translate", _roles(masks)), feeds)
        return GeneratorOutput(out["image"], out["input_mask"], exemplar.mask)

    # -- plumbing ----------------------------------------------------------------------------------
    def runner(self, variant: Variant):
        """The engine of `variant`'s graph; MissingGraphError (saying what to build) when there is none."""
        from lmt_fast.runtime.onnxruntime import MissingGraphError, _export_flags

        key = Variant(variant.part, variant.masks, self.dtype)
        if key not in self._runners:
            raise MissingGraphError(
                f"{self._describe} has no {key.part} engine with masks {list(key.masks) or 'none'} (it has: "
                f"{', '.join(v.tag for v in self.variants)}); export the graph with `lmt-fast export` "
                f"{_export_flags(key)} and build it with `lmt-fast build-engine`")
        return self._runners[key]

    def _run(self, variant: Variant, tensors: dict) -> dict:
        import torch

        runner = self.runner(variant)
        dtype = getattr(torch, self.dtype)
        feeds = {name: t.detach().to(device=self.engine_device, dtype=dtype).contiguous()
                 for name, t in tensors.items() if t is not None}
        try:
            out = runner.run(feeds)
        except ContractError as exc:
            raise ContractError(f"{self._describe} ({runner.contract.variant.tag} engine): {exc}") from None
        return {name: value.to(self.device) for name, value in out.items()}

    def __repr__(self) -> str:
        return (f"TensorRTGenerator({self._describe}, dtype={self.dtype}, engines={[v.tag for v in self.variants]}, "
                f"engine_device={self.engine_device})")


def _engine_device(device):
    """The CUDA device the engines run on: `device` itself when it is one, else torch's current CUDA device."""
    import torch

    device = torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT engines run on a CUDA GPU, and PyTorch sees none (no GPU, or PyTorch "
                           "without CUDA)")
    if device.type == "cuda" and device.index is not None:
        return device
    return torch.device("cuda", torch.cuda.current_device())


# -- buffer backends ------------------------------------------------------------------------------------

class _TorchBuffers:
    def __init__(self, device: int):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("buffers='torch' needs PyTorch with CUDA and a GPU; use buffers='cuda-python' "
                               "or 'pycuda' for a torch-free runner")
        self.torch = torch
        self.device = torch.device("cuda", device)
        self.dtypes = {"float32": torch.float32, "float16": torch.float16, "uint8": torch.uint8,
                       "bfloat16": torch.bfloat16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}

    def on_device(self):
        return self.torch.cuda.device(self.device)

    def dtype_of(self, t) -> str:
        return str(t.dtype).replace("torch.", "") if isinstance(t, self.torch.Tensor) else t.dtype.name

    def execute(self, runner: EngineRunner, inputs: Mapping, shapes, profile: int) -> dict:
        torch = self.torch
        stream = torch.cuda.current_stream(self.device)
        tensors = {name: torch.as_tensor(t).to(self.device).contiguous() for name, t in inputs.items()}
        out_shapes = runner.prepare(shapes, profile, stream.cuda_stream)
        outputs = {name: torch.empty(out_shapes[name], dtype=self.dtypes[dtype], device=self.device)
                   for name, (dtype, _) in runner.io.outputs.items()}
        addresses = {name: t.data_ptr() for name, t in {**tensors, **outputs}.items()}
        runner.launch(addresses, stream.cuda_stream)
        # The inputs may be temporaries made above: keep them alive until the stream has used them.
        for t in tensors.values():
            t.record_stream(stream)
        return outputs


class _CudaPythonBuffers:
    def __init__(self, device: int):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6
            except ImportError:
                raise ImportError("buffers='cuda-python' needs the 'cuda-python' package (pip install cuda-python)") \
                    from None
        self.cudart = cudart
        self.device = device

    @contextlib.contextmanager
    def on_device(self):
        """The runtime API's current device is per thread: set it for every call."""
        self._call(self.cudart.cudaSetDevice(self.device))
        yield

    def _call(self, result):
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {self.cudart.cudaGetErrorName(err)[1]}")
        return rest[0] if len(rest) == 1 else rest

    @staticmethod
    def dtype_of(array) -> str:
        import numpy as np

        return np.asarray(array).dtype.name

    def execute(self, runner: EngineRunner, inputs: Mapping, shapes, profile: int) -> dict:
        import numpy as np

        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._call(cudart.cudaStreamCreate())
        handle = int(stream)
        host_in = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
        allocations = []
        try:
            out_shapes = runner.prepare(shapes, profile, handle)
            host_out = {name: np.empty(out_shapes[name], dtype=np.dtype(dtype))
                        for name, (dtype, _) in runner.io.outputs.items()}
            addresses = {}
            for name, array in {**host_in, **host_out}.items():
                addresses[name] = self._call(cudart.cudaMalloc(max(array.nbytes, 1)))
                allocations.append(addresses[name])
            for name, array in host_in.items():
                self._call(cudart.cudaMemcpyAsync(addresses[name], array.ctypes.data, array.nbytes, h2d, stream))
            runner.launch(addresses, handle)
            for name, array in host_out.items():
                self._call(cudart.cudaMemcpyAsync(array.ctypes.data, addresses[name], array.nbytes, d2h, stream))
            self._call(cudart.cudaStreamSynchronize(stream))
            return host_out
        finally:
            for address in allocations:
                cudart.cudaFree(address)
            cudart.cudaStreamDestroy(stream)


class _PyCudaBuffers:
    def __init__(self, device: int):
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise ImportError("buffers='pycuda' needs the 'pycuda' package (pip install pycuda)") from None
        cuda.init()
        self.cuda = cuda
        # TensorRT works in the device's primary context (the CUDA runtime's); share it.
        self.context = cuda.Device(device).retain_primary_context()

    dtype_of = _CudaPythonBuffers.dtype_of

    @contextlib.contextmanager
    def on_device(self):
        self.context.push()
        try:
            yield
        finally:
            self.context.pop()

    def execute(self, runner: EngineRunner, inputs: Mapping, shapes, profile: int) -> dict:
        import numpy as np

        cuda = self.cuda
        stream = cuda.Stream()
        host_in = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
        out_shapes = runner.prepare(shapes, profile, stream.handle)
        host_out = {name: np.empty(out_shapes[name], dtype=np.dtype(dtype))
                    for name, (dtype, _) in runner.io.outputs.items()}
        device = {}
        try:
            for name, array in {**host_in, **host_out}.items():
                device[name] = cuda.mem_alloc(max(array.nbytes, 1))
            for name, array in host_in.items():
                cuda.memcpy_htod_async(device[name], array, stream)
            runner.launch({name: int(d) for name, d in device.items()}, stream.handle)
            for name, array in host_out.items():
                cuda.memcpy_dtoh_async(array, device[name], stream)
            stream.synchronize()
            return host_out
        finally:
            for allocation in device.values():   # freed here, while the context is current
                allocation.free()


_BUFFER_BACKENDS = {"torch": _TorchBuffers, "cuda-python": _CudaPythonBuffers, "pycuda": _PyCudaBuffers}
