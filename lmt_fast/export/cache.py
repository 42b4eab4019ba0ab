"""Exported graphs cached on disk by content, so a checkpoint is exported once per variant.

The key hashes everything the graph depends on: the generator's weights and config, the variant, the
contract version, the opset, the lmt_fast / torch / onnxscript versions and lmt_fast's model and export
sources. Location:
``$LMT_FAST_ONNX_CACHE`` if set, else ``$XDG_CACHE_HOME/lmt_fast/onnx`` (``~/.cache/lmt_fast/onnx``).
Entries are written atomically, so concurrent processes at worst export the same graph twice.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from lmt_fast.export.contract import CONTRACT_VERSION, Variant

CACHE_ENV = "LMT_FAST_ONNX_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmt_fast" / "onnx"


def model_digest(generator: nn.Module) -> str:
    """sha256 of the generator's config and every tensor of its state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(generator.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the sources an exported graph depends on (so a changed lmt_fast re-exports)."""
    import lmt_fast

    root = Path(lmt_fast.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted([*root.glob("export/*.py"), *root.glob("models/*.py"), root / "ops" / "reference.py"]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def cache_key(generator: nn.Module, variant: Variant, opset: int) -> str:
    import onnxscript

    import lmt_fast

    versions = f"{CONTRACT_VERSION}|{opset}|{lmt_fast.__version__}|{torch.__version__}|{onnxscript.__version__}"
    text = f"{model_digest(generator)}|{variant.tag}|{versions}|{code_digest()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_export(generator: nn.Module, variant: Variant, *, opset: int | None = None,
                  directory: str | os.PathLike | None = None) -> Path:
    """The path of the exported graph, exporting it first if it is not cached yet."""
    from lmt_fast.export.onnx import DEFAULT_OPSET, export_onnx

    opset = DEFAULT_OPSET if opset is None else opset
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / cache_key(generator, variant, opset) / f"{variant.tag}.onnx"
    if not path.is_file():
        export_onnx(generator, variant, path, opset=opset)
    return path


def cached_exports(jobs, *, opset: int | None = None, directory: str | os.PathLike | None = None,
                   workers: int = 1) -> list[Path]:
    """cached_export for several (generator, variant) pairs; the missing graphs are exported by up to
    `workers` processes at once.

    Exporting is single-threaded Python (torch.export tracing), so separate processes are what uses
    more than one core. They are started with "spawn": a calling script needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    from lmt_fast.export.onnx import DEFAULT_OPSET

    jobs = list(jobs)
    folder = Path(directory) if directory is not None else cache_dir()
    key_opset = DEFAULT_OPSET if opset is None else opset
    missing = [(g, v) for g, v in jobs if not (folder / cache_key(g, v, key_opset) / f"{v.tag}.onnx").is_file()]
    if workers > 1 and len(missing) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=get_context("spawn")) as pool:
            # the workers get CPU copies (pickled); the caller's modules are left as they are
            list(pool.map(_export_one, [(copy.deepcopy(g).to("cpu"), v, opset, folder) for g, v in missing]))
    return [cached_export(g, v, opset=opset, directory=folder) for g, v in jobs]


def _export_one(job) -> str:
    generator, variant, opset, folder = job
    return str(cached_export(generator, variant, opset=opset, directory=folder))
