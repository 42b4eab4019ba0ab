"""Write an NVIDIA Triton Inference Server model repository for exported graphs.

    DIR/<model_name>/config.pbtxt        platform onnxruntime_onnx (an .onnx) or tensorrt_plan (a .plan)
    DIR/<model_name>/1/model.onnx        (or model.plan)
    DIR/<model_name>/lmt_fast.json       the I/O contract and model config (Triton ignores the file)

Inputs and outputs are the contract's, without the batch axis (Triton adds it: max_batch_size > 0), and
with -1 for every dynamic size. Dynamic batching is on: Triton batches requests of equal image sizes.
An exemplar-cached export becomes two models, ``<name>_style_encoder`` and ``<name>_translate``.
Every written config is parsed back with protobuf against Triton's ModelConfig schema
(lmt_fast.export.triton_schema) before the function returns.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from lmt_fast.export.contract import ContractError, IOContract

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}
# model file suffix -> (platform, file name in the version folder, instance kind)
PLATFORMS = {".onnx": ("onnxruntime_onnx", "model.onnx", "KIND_AUTO"),
             ".plan": ("tensorrt_plan", "model.plan", "KIND_GPU")}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def config_text(name: str, contract: IOContract, platform: str, max_batch_size: int = 8,
                max_queue_delay_us: int = 100, instance_kind: str = "KIND_AUTO", instance_count: int = 1) -> str:
    """The config.pbtxt of one model."""
    def tensor(spec) -> str:
        dims = ", ".join(str(d) if isinstance(d, int) else "-1" for d in spec.dims[1:])
        return f'  {{\n    name: "{spec.name}"\n    data_type: {TRITON_TYPES[spec.dtype]}\n    dims: [ {dims} ]\n  }}'

    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {int(max_batch_size)}",
             "input [", ",\n".join(tensor(t) for t in contract.inputs), "]",
             "output [", ",\n".join(tensor(t) for t in contract.outputs), "]",
             f"dynamic_batching {{\n  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n}}",
             f"instance_group [\n  {{\n    kind: {instance_kind}\n    count: {int(instance_count)}\n  }}\n]"]
    return "\n".join(lines) + "\n"


def write_model(repo: str | os.PathLike, name: str, model_file: str | os.PathLike, contract: IOContract,
                config: dict | None = None, *, max_batch_size: int = 8, max_queue_delay_us: int = 100,
                instance_count: int = 1, version: int = 1, max_profile_batch: int | None = None) -> Path:
    """Write DIR/name/{config.pbtxt, <version>/model.*, lmt_fast.json}; returns the model directory.

    max_profile_batch: for a TensorRT plan, the largest batch every optimization profile accepts;
    max_batch_size may not exceed it.
    """
    from lmt_fast.export.triton_schema import parse_config

    model_file = Path(model_file)
    if model_file.suffix not in PLATFORMS:
        raise ValueError(f"{model_file}: Triton models here are .onnx or .plan files")
    if not _NAME.match(name):
        raise ValueError(f"model name {name!r} may only use letters, digits, '_', '-' and '.'")
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1 (the graphs have a dynamic batch), got {max_batch_size}")
    if max_profile_batch is not None and max_batch_size > max_profile_batch:
        raise ContractError(f"max_batch_size {max_batch_size} exceeds the engine's largest profile batch "
                            f"{max_profile_batch}; lower it or rebuild with a larger --profile")
    platform, file_name, kind = PLATFORMS[model_file.suffix]
    text = config_text(name, contract, platform, max_batch_size, max_queue_delay_us, kind, instance_count)
    parse_config(text)  # fail here, not in the server
    folder = Path(repo) / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, folder / str(version) / file_name)
    (folder / "config.pbtxt").write_text(text)
    info = {"contract": json.loads(contract.to_json()), "config": config}
    (folder / "lmt_fast.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder


def write_triton_repo(repo: str | os.PathLike, model_files, model_name: str = "lomit", **options) -> list[Path]:
    """A repository for the files of one export (a .onnx / .plan, or the two of an exemplar-cached
    export). The contract and config come from each ONNX file's metadata or each plan's <plan>.json;
    pass contracts={path: (IOContract, config)} for files without them."""
    from lmt_fast.export.onnx import read_metadata
    from lmt_fast.export.tensorrt import read_sidecar

    contracts = options.pop("contracts", {})
    folders = []
    for path in [Path(p) for p in ([model_files] if isinstance(model_files, (str, os.PathLike)) else model_files)]:
        if path in contracts:
            contract, config = contracts[path]
            max_profile_batch = None
        elif path.suffix == ".onnx":
            contract, config, _ = read_metadata(path)
            max_profile_batch = None
        else:
            sidecar = read_sidecar(path)
            if not sidecar or not sidecar.get("contract"):
                raise ContractError(f"{path} has no {path.name}.json sidecar (written by lmt-fast build-engine); "
                                    "pass its contract explicitly")
            contract, config = IOContract.from_json(json.dumps(sidecar["contract"])), sidecar.get("config")
            batches = [ranges[contract.input_names[0]][2][0] for ranges in sidecar.get("profiles", [])]
            max_profile_batch = min(batches) if batches else None
        part = contract.variant.part
        name = model_name if part == "full" else f"{model_name}_{part}"
        folders.append(write_model(repo, name, path, contract, config, max_profile_batch=max_profile_batch,
                                   **options))
    return folders
