"""Build a TensorRT engine (``.plan``) from an exported ONNX graph with the TensorRT Python builder.

    lmt-fast build-engine model.onnx -o model.plan --profile input:1x3x128x128:4x3x128x128:8x3x256x256

does what this trtexec line does (trtexec ships with TensorRT's tarball / apt packages, not with the
pip wheels):

    trtexec --onnx=model.onnx --saveEngine=model.plan \\
        --minShapes=input:1x3x128x128,exemplar:1x3x128x128 \\
        --optShapes=input:4x3x128x128,exemplar:4x3x128x128 \\
        --maxShapes=input:8x3x256x256,exemplar:8x3x256x256 [--memPoolSize=workspace:1024M]

(``trtexec_command`` writes the exact line for a given graph and profile.) Graphs exported with
``--custom-ops`` need the plugin library of csrc/trt: ``--plugin liblmt_trt_plugin.so`` here,
``--dynamicPlugins=liblmt_trt_plugin.so`` for trtexec, or its static-registration build with
``--staticPlugins=liblmt_trt_plugin_static.so`` (csrc/trt/README.md).

Precision. TensorRT 11 is strongly typed only: the engine computes in the types the ONNX graph states,
and there is no FP16 builder flag. For an FP16 engine export an FP16 graph (``lmt-fast export --dtype
float16``); its normalisation statistics are float32 islands that TensorRT keeps. TensorRT 10 builds
float16 graphs strongly typed too (so those islands stay float32) and additionally accepts ``fp16=True``
for a float32 graph: the classic weakly typed FP16 mode, where TensorRT may also run the
normalisations in FP16 (prefer the float16 export).

This module imports without tensorrt; building raises TensorRTUnavailableError naming the package.
A ``<plan>.json`` written beside the engine records the model config, the I/O contract and the
profile, so lmt_fast.runtime.tensorrt.EngineRunner can check requests against them.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Sequence

from lmt_fast.export.contract import ContractError, IOContract
from lmt_fast.export.profiles import Profile

INSTALL_HINT = ("pip install 'tensorrt<11' (TensorRT 10) or 'tensorrt' (11, strongly typed); the wheels need an "
                "NVIDIA GPU driver")


class TensorRTUnavailableError(RuntimeError):
    """The tensorrt Python package is not installed (or does not load)."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build the engine; the message carries TensorRT's errors."""


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTUnavailableError(f"the TensorRT Python package 'tensorrt' is not installed or does not "
                                       f"load ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def sidecar_path(plan: str | os.PathLike) -> Path:
    return Path(str(plan) + ".json")


def trtexec_command(onnx_path, plan_path, profile: Profile, workspace_mib: int | None = None,
                    fp16: bool = False, plugins: Sequence[str] = (), static_plugins: Sequence[str] = (),
                    serialize_plugins: bool = False) -> str:
    """The trtexec invocation equivalent to build_engine with the same arguments.

    plugins: libraries that register through getCreators (liblmt_trt_plugin.so), passed as --dynamicPlugins;
    static_plugins: libraries that register while loading (liblmt_trt_plugin_static.so), --staticPlugins:
    trtexec only dlopens those (csrc/trt/README.md). serialize_plugins: store the --dynamicPlugins libraries
    in the plan (--setPluginsToSerialize), as build_engine(serialize_plugins=True) does.
    """
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    args += [f"{flag}={value}" for flag, value in profile.trtexec_shapes().items()]
    if workspace_mib:
        args.append(f"--memPoolSize=workspace:{int(workspace_mib)}M")
    if fp16:
        args.append("--fp16")
    args += [f"--dynamicPlugins={p}" for p in plugins]
    if serialize_plugins:
        args += [f"--setPluginsToSerialize={p}" for p in plugins]
    args += [f"--staticPlugins={p}" for p in static_plugins]
    return " ".join(shlex.quote(str(a)) for a in args)


def network_flags(trt, float16_graph: bool) -> int:
    """The NetworkDefinitionCreationFlag bits for builder.create_network, by TensorRT major version.

    TensorRT 11 builds every network strongly typed (STRONGLY_TYPED is a deprecated no-op) and has no
    EXPLICIT_BATCH: 0. TensorRT 10: every network is explicit batch (EXPLICIT_BATCH is deprecated and
    ignored, so it is not set); STRONGLY_TYPED for float16 graphs, so their float32 statistics stay
    float32 (a weakly typed build may run them in FP16). Older TensorRT is refused: the runtime needs the
    named-tensor API and the plugin IPluginV3 of TensorRT 10.
    """
    major = tensorrt_major(trt)
    if major < 10:
        raise EngineBuildError(f"TensorRT {trt.__version__} is too old: lmt_fast builds with TensorRT 10 or 11; "
                               f"{INSTALL_HINT}")
    if major >= 11 or not float16_graph:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_engine(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, profiles: Sequence[Profile], *,
                 contract: IOContract | None = None, config: dict | None = None, workspace_mib: int | None = None,
                 fp16: bool = False, plugins: Sequence[str] = (), serialize_plugins: bool = False,
                 verbose: bool = False) -> Path:
    """Parse `onnx_path`, build a serialized engine with one optimization profile per entry of
    `profiles`, write it to `plan_path` (and the JSON sidecar); returns the plan path.

    contract / config: what the graph's lmt_fast metadata says (for the sidecar and the I/O check).
    plugins: shared libraries with TensorRT plugins to load first (graphs exported with custom ops).
    serialize_plugins: store those libraries in the plan (IBuilderConfig.plugins_to_serialize, trtexec's
    --setPluginsToSerialize), so that the engine loads where nobody loads the plugin (Triton); such a
    plan must then not be given the same library again (its creator would be registered twice).
    """
    trt = import_tensorrt()
    major = tensorrt_major(trt)
    float16_graph = contract is not None and contract.variant.dtype == "float16"
    if serialize_plugins and not plugins:
        raise EngineBuildError("serialize_plugins needs the plugin libraries to store (plugins=[...])")
    if fp16 and major >= 11:
        raise EngineBuildError("TensorRT 11 has no FP16 builder flag (it is strongly typed: the engine's precision "
                               "is the ONNX graph's); export an FP16 graph with `lmt-fast export --dtype float16`")
    if fp16 and float16_graph:
        raise EngineBuildError("the graph is float16 already; --fp16 is for float32 graphs on TensorRT 10")
    if not profiles:
        raise ContractError("build_engine needs at least one optimization profile")
    flags = network_flags(trt, float16_graph)

    from lmt_fast.runtime.tensorrt import load_plugins

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    load_plugins(trt, list(plugins))   # once per process; PluginLoadError names a library that does not load
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}: " + " | ".join(errors))
    if contract is not None:
        contract.check_io(*network_io(network), what=f"network parsed from {onnx_path}")

    build_config = builder.create_builder_config()
    if workspace_mib:
        build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if fp16:
        build_config.set_flag(trt.BuilderFlag.FP16)
    if serialize_plugins:
        build_config.plugins_to_serialize = [str(Path(p).resolve()) for p in plugins]
    for profile in profiles:
        optimization_profile = builder.create_optimization_profile()
        for name, r in profile.ranges.items():
            optimization_profile.set_shape(name, r.min, r.opt, r.max)
        build_config.add_optimization_profile(optimization_profile)
    serialized = builder.build_serialized_network(network, build_config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    write_sidecar(plan_path, contract, config, profiles, trt.__version__)
    return plan_path


def network_io(network) -> tuple[dict, dict]:
    """({name: (dtype, shape)} of inputs, same of outputs) of a parsed INetworkDefinition."""
    from lmt_fast.runtime.tensorrt import dtype_name

    inputs = {t.name: (dtype_name(t.dtype), tuple(t.shape))
              for t in (network.get_input(i) for i in range(network.num_inputs))}
    outputs = {t.name: (dtype_name(t.dtype), tuple(t.shape))
               for t in (network.get_output(i) for i in range(network.num_outputs))}
    return inputs, outputs


def write_sidecar(plan_path, contract: IOContract | None, config: dict | None, profiles: Sequence[Profile],
                  tensorrt_version: str) -> Path:
    """Record what the engine was built from: <plan>.json."""
    info = {"tensorrt": str(tensorrt_version),
            "contract": json.loads(contract.to_json()) if contract is not None else None,
            "config": config,
            "profiles": [{name: [list(r.min), list(r.opt), list(r.max)] for name, r in p.ranges.items()}
                         for p in profiles]}
    path = sidecar_path(plan_path)
    path.write_text(json.dumps(info, indent=1) + "\n")
    return path


def read_sidecar(plan_path) -> dict | None:
    path = sidecar_path(plan_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path} is not valid JSON: {exc}") from None
