"""ONNX export with a stable I/O contract, TensorRT engine builds, and Triton model repositories.

    from lmt_fast.export import Variant, export_onnx
    export_onnx(generator, Variant(), "model.onnx")

contract.py    the I/O contract (plain Python)         onnx.py        the export and its checks
lowering.py    the op family as ONNX                  graphs.py      what each graph computes
precision.py   float16 graphs: reductions in float32  cache.py       exports cached by content
coverage.py    TensorRT parser operator coverage      profiles.py    optimization profiles
tensorrt.py    engine builds (Python builder)         plugin_build.py  the csrc/trt plugin library
triton_repo.py Triton model repositories              triton_schema.py  Triton's config schema (protobuf)
Importing this package does not import torch, onnx or tensorrt; the functions below import what they need.
"""
from lmt_fast.export.contract import CONTRACT_VERSION, ContractError, IOContract, ModelDims, Variant

__all__ = ["CONTRACT_VERSION", "ContractError", "IOContract", "ModelDims", "Variant", "export_onnx",
           "export_files", "read_metadata"]


def __getattr__(name: str):
    if name in ("export_onnx", "export_files", "read_metadata"):
        from lmt_fast.export import onnx

        return getattr(onnx, name)
    raise AttributeError(f"module 'lmt_fast.export' has no attribute {name!r}")
