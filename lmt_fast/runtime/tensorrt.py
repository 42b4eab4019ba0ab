"""Run a TensorRT engine built from an lmt_fast ONNX export, with checked inputs.

    from lmt_fast.runtime.tensorrt import EngineRunner
    runner = EngineRunner("model.plan")                 # torch CUDA tensors as buffers
    out = runner(input=x, exemplar=e)                    # {"image": ..., "input_mask": ..., "exemplar_mask": ...}

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

This module imports without tensorrt, torch, cuda-python or pycuda; EngineRunner raises
TensorRTUnavailableError (or ImportError naming the buffer package) when what it needs is missing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from lmt_fast.export.contract import ContractError, IOContract, ModelDims, Variant
from lmt_fast.export.profiles import Profile, ShapeRange, select_profile

BUFFERS = ("torch", "cuda-python", "pycuda")
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


class EngineRunner:
    def __init__(self, plan: str | os.PathLike | bytes, buffers: str = "torch", device: int = 0,
                 contract: IOContract | None = None):
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
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(data)
        if self.engine is None:
            raise ContractError(f"{plan if not isinstance(plan, bytes) else 'the plan'} is not a TensorRT engine "
                                f"this TensorRT ({trt.__version__}) and GPU can load (built by another version?)")
        self.io = EngineIO.of_engine(self.engine, trt)
        sidecar = None if isinstance(plan, bytes) else read_sidecar(plan)
        if contract is None and sidecar and sidecar.get("contract"):
            import json

            contract = IOContract.from_json(json.dumps(sidecar["contract"]))
        self.contract = contract or infer_contract(self.io)
        self.config = (sidecar or {}).get("config")
        self.contract.check_io(self.io.inputs, self.io.outputs)
        self.context = self.engine.create_execution_context()
        self._profile = 0

    def __call__(self, **inputs):
        return self.run(inputs)

    def check(self, shapes: Mapping[str, tuple], dtypes: Mapping[str, str]) -> tuple[dict, int]:
        """Validate a request; returns (contract symbol values, profile index)."""
        return check_request(self.contract, self.io, shapes, dtypes)

    def run(self, inputs: Mapping) -> dict:
        shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        dtypes = {name: self._backend.dtype_of(t) for name, t in inputs.items()}
        _, profile = self.check(shapes, dtypes)
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
        self._call(cudart.cudaSetDevice(device))

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

    def execute(self, runner: EngineRunner, inputs: Mapping, shapes, profile: int) -> dict:
        import numpy as np

        cuda = self.cuda
        self.context.push()
        try:
            stream = cuda.Stream()
            host_in = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
            out_shapes = runner.prepare(shapes, profile, stream.handle)
            host_out = {name: np.empty(out_shapes[name], dtype=np.dtype(dtype))
                        for name, (dtype, _) in runner.io.outputs.items()}
            device = {name: cuda.mem_alloc(max(a.nbytes, 1)) for name, a in {**host_in, **host_out}.items()}
            for name, array in host_in.items():
                cuda.memcpy_htod_async(device[name], array, stream)
            runner.launch({name: int(d) for name, d in device.items()}, stream.handle)
            for name, array in host_out.items():
                cuda.memcpy_dtoh_async(array, device[name], stream)
            stream.synchronize()
            return host_out
        finally:
            self.context.pop()


_BUFFER_BACKENDS = {"torch": _TorchBuffers, "cuda-python": _CudaPythonBuffers, "pycuda": _PyCudaBuffers}
