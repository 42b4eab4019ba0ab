"""Run exported LOMIT graphs with onnxruntime.

OnnxSession runs one graph and checks every request against its I/O contract first.
OnnxRuntimeGenerator offers the three methods the Translator calls on a generator (``__call__``,
``encode_exemplar``, ``translate_encoded``) on top of graphs: exported on first use from a
checkpoint's generator (and cached on disk, see lmt_fast.export.cache), or read from ONNX files that
lmt_fast exported (their metadata carries the model config and the contract).

Providers: a CPU device runs on CPUExecutionProvider. A CUDA device (``device="cuda"`` or ``"cuda:N"``)
runs on CUDAExecutionProvider on that GPU (with CPUExecutionProvider behind it for the nodes CUDA has no
kernel for, as onnxruntime assigns them); when the installed onnxruntime has no CUDAExecutionProvider
(the CPU-only ``onnxruntime`` wheel instead of ``onnxruntime-gpu``), or the provider cannot start (CUDA /
cuDNN libraries missing), that is an ExecutionProviderError naming the providers there are, never a
silent fall back to the CPU. Tensors go through host memory (numpy) in both cases.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from lmt_fast.export.contract import ContractError, Variant

_NUMPY = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
GPU_INSTALL_HINT = ("install onnxruntime-gpu instead of onnxruntime (pip uninstall onnxruntime && pip install "
                    "onnxruntime-gpu), matching your CUDA version")


class MissingGraphError(ContractError):
    """The ONNX files (or engines) at hand do not include the graph a call needs; the message says which to
    export. A ContractError: the request does not fit what was exported (the CLI reports it in one line)."""


class ExecutionProviderError(RuntimeError):
    """The device asks for an onnxruntime execution provider that is not installed or does not start."""


def providers_for(device: str | torch.device = "cpu") -> list:
    """onnxruntime providers for `device`: ["CPUExecutionProvider"] on the CPU; on "cuda[:N]",
    [("CUDAExecutionProvider", {"device_id": N}), "CPUExecutionProvider"], or ExecutionProviderError
    naming the installed providers when this onnxruntime has no CUDA provider."""
    import onnxruntime as ort

    device = torch.device(device)
    if device.type == "cpu":
        return [CPU_PROVIDER]
    available = ort.get_available_providers()
    if device.type != "cuda":
        raise ExecutionProviderError(f"the onnxruntime backend runs on 'cpu' or 'cuda[:N]', not {str(device)!r}")
    if CUDA_PROVIDER not in available:
        raise ExecutionProviderError(
            f"device {str(device)!r} needs onnxruntime's {CUDA_PROVIDER}, which this onnxruntime "
            f"({ort.__version__}) does not have; its providers are {available}. {GPU_INSTALL_HINT}, or run on "
            "device 'cpu'")
    return [(CUDA_PROVIDER, {"device_id": device.index or 0}), CPU_PROVIDER]


def provider_names(providers) -> list[str]:
    """Names of a providers list that may hold (name, options) pairs."""
    return [p[0] if isinstance(p, (tuple, list)) else p for p in providers]


class OnnxSession:
    """One exported graph in an onnxruntime InferenceSession, with its contract."""

    def __init__(self, model, providers: list[str] | None = None):
        """model: a path, serialized bytes or an onnx.ModelProto exported by lmt_fast."""
        import onnx
        import onnxruntime as ort

        from lmt_fast.export.onnx import read_metadata

        proto = model if isinstance(model, onnx.ModelProto) else \
            onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
        self.contract, self.config, self.exported_by = read_metadata(proto)
        self.path = None if isinstance(model, (bytes, onnx.ModelProto)) else Path(model)
        source = str(self.path) if self.path is not None else proto.SerializeToString()
        providers = list(providers or [CPU_PROVIDER])
        available = ort.get_available_providers()
        absent = [p for p in provider_names(providers) if p not in available]
        if absent:
            hint = f" {GPU_INSTALL_HINT}." if CUDA_PROVIDER in absent else ""
            raise ExecutionProviderError(f"this onnxruntime ({ort.__version__}) has no {absent}; its providers are "
                                         f"{available}.{hint}")
        self.session = ort.InferenceSession(source, providers=providers)
        # onnxruntime falls back to the CPU (with a logged warning) when a requested provider fails to start.
        missing = [p for p in provider_names(providers) if p not in self.session.get_providers()]
        if missing:
            raise ExecutionProviderError(
                f"onnxruntime could not start {missing} for {self.path or 'the graph'} (it would run on "
                f"{self.session.get_providers()}); see onnxruntime's log above: usually CUDA or cuDNN libraries "
                f"that onnxruntime-gpu {ort.__version__} needs are missing or of another version")

    @property
    def variant(self) -> Variant:
        return self.contract.variant

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the feeds against the contract (names, dtypes, shapes), run, return outputs by name."""
        arrays = {name: np.asarray(value) for name, value in feeds.items()}
        self.contract.resolve({k: a.shape for k, a in arrays.items()}, {k: a.dtype.name for k, a in arrays.items()})
        outputs = self.session.run(self.contract.output_names, arrays)
        return dict(zip(self.contract.output_names, outputs))


class OnnxRuntimeGenerator:
    """LOMITGenerator's inference methods, computed by exported graphs in onnxruntime.

    Inputs and outputs are torch tensors (like the generator's); outputs come back on `device`.
    """

    backend = "onnxruntime"

    def __init__(self, config, graphs, dtype: str = "float32", device: str | torch.device = "cpu",
                 providers: list[str] | None = None, describe: str = "the exported graphs"):
        """graphs: a callable Variant -> path of that graph, raising MissingGraphError if there is none."""
        self.config = config
        self.dtype = dtype
        self.device = torch.device(device)
        self.providers = providers or providers_for(self.device)
        self._graphs = graphs
        self._describe = describe
        self._sessions: dict[Variant, OnnxSession] = {}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_generator(cls, generator, dtype: str = "float32", device="cpu", providers=None,
                       cache_dir: str | os.PathLike | None = None) -> "OnnxRuntimeGenerator":
        """Graphs exported from `generator` on first use, through the export cache."""
        import copy

        from lmt_fast.export.cache import cached_export

        if dtype not in _NUMPY or dtype == "uint8":
            raise ValueError(f"the onnxruntime backend runs float32 or float16 graphs, not {dtype}")
        source = copy.deepcopy(generator).to(device="cpu", dtype=torch.float32).eval()

        def graphs(variant: Variant) -> Path:
            return cached_export(source, variant, directory=cache_dir)

        return cls(generator.config, graphs, dtype, device, providers, "graphs exported from the checkpoint")

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, device="cpu", providers=None) -> "OnnxRuntimeGenerator":
        """Graphs from one .onnx file, or from every lmt_fast .onnx file of a directory (one model)."""
        import onnx

        from lmt_fast.export.contract import WEIGHTS_KEY
        from lmt_fast.export.onnx import metadata_props, read_metadata
        from lmt_fast.models import LOMITConfig

        path = Path(path)
        files = sorted(path.glob("*.onnx")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"no ONNX model at {path}")
        found: dict[Variant, Path] = {}
        configs, weights = {}, set()
        for f in files:
            model = onnx.load(str(f), load_external_data=False)
            contract, config, _ = read_metadata(model)
            if contract.variant.io != "float" or contract.variant.custom_ops:
                continue  # uint8 I/O and plugin graphs are for serving, not for the Translator
            found[contract.variant] = f
            configs[f] = config
            weights.add(metadata_props(model).get(WEIGHTS_KEY))
        if not found:
            raise ContractError(f"{path} holds no graph the Translator can run (it needs float I/O and no "
                                "custom ops; export with `lmt-fast export` without --io uint8 / --custom-ops)")
        if len({json.dumps(c, sort_keys=True) for c in configs.values()}) > 1 or len(weights) > 1:
            raise ContractError(f"the ONNX files in {path} come from different models (configs or weights); "
                                "keep one model per directory")
        dtypes = {v.dtype for v in found}
        if len(dtypes) > 1:
            raise ContractError(f"the ONNX files in {path} mix dtypes {sorted(dtypes)}; keep one per directory")
        config = LOMITConfig.from_dict(next(iter(configs.values())))

        def graphs(variant: Variant) -> Path:
            if variant not in found:
                raise MissingGraphError(
                    f"{path} has no {variant.part} graph with masks {list(variant.masks) or 'none'} "
                    f"(it has: {', '.join(sorted(v.tag for v in found))}); export it with `lmt-fast export` "
                    f"{_export_flags(variant)}")
            return found[variant]

        return cls(config, graphs, dtypes.pop(), device, providers, str(path))

    def session(self, variant: Variant) -> OnnxSession:
        if variant not in self._sessions:
            self._sessions[variant] = OnnxSession(self._graphs(variant), self.providers)
        return self._sessions[variant]

    # -- the generator interface -------------------------------------------------------------------
    def __call__(self, x_in: torch.Tensor, x_ex: torch.Tensor, input_mask: torch.Tensor | None = None,
                 exemplar_mask: torch.Tensor | None = None):
        """LOMITGenerator.forward."""
        from lmt_fast.models import GeneratorOutput

        masks = {"input_mask_in": input_mask, "exemplar_mask_in": exemplar_mask}
        out = self._run(Variant("full", _roles(masks)), {"input": x_in, "exemplar": x_ex, **masks})
        return GeneratorOutput(out["image"], out["input_mask"], out["exemplar_mask"])

    def encode_exemplar(self, x_ex: torch.Tensor, exemplar_mask: torch.Tensor | None = None):
        """LOMITGenerator.encode_exemplar. The graph does not return the exemplar's content code
        (translation does not use it): ExemplarCode.content is an empty (N, 0, 1, 1) tensor."""
        from lmt_fast.models import ExemplarCode

        masks = {"exemplar_mask_in": exemplar_mask}
        out = self._run(Variant("style_encoder", _roles(masks)), {"exemplar": x_ex, **masks})
        attention = out["exemplar_attention"]
        content = attention.new_empty((attention.shape[0], 0, 1, 1))
        return ExemplarCode(content, attention, out["exemplar_mask"], out["exemplar_style"])

    def translate_encoded(self, x_in: torch.Tensor, exemplar, input_mask: torch.Tensor | None = None):
        """LOMITGenerator.translate_encoded; a single encoded exemplar serves every input of the batch."""
        from lmt_fast.models import GeneratorOutput

        exemplar = exemplar.expand(x_in.shape[0])
        masks = {"input_mask_in": input_mask}
        feeds = {"input": x_in, "exemplar_attention": exemplar.attention, "exemplar_style": exemplar.style_fg,
                 **masks}
        out = self._run(Variant("translate", _roles(masks)), feeds)
        return GeneratorOutput(out["image"], out["input_mask"], exemplar.mask)

    # -- plumbing ----------------------------------------------------------------------------------
    def _run(self, variant: Variant, tensors: dict) -> dict[str, torch.Tensor]:
        variant = Variant(variant.part, variant.masks, self.dtype)
        session = self.session(variant)
        np_dtype = _NUMPY[self.dtype]
        feeds = {name: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy().astype(np_dtype, copy=False))
                 for name, t in tensors.items() if t is not None}
        return {name: torch.from_numpy(value).to(self.device) for name, value in session.run(feeds).items()}

    def __repr__(self) -> str:
        providers = provider_names(self.providers)
        return f"OnnxRuntimeGenerator({self._describe}, dtype={self.dtype}, providers={providers})"


def _roles(masks: dict) -> tuple:
    return tuple(name[: -len("_mask_in")] for name, m in masks.items() if m is not None)


def _export_flags(variant: Variant) -> str:
    flags = ["--exemplar-cached"] if variant.part != "full" else []
    if variant.masks:
        flags.append("--with-masks " + ("both" if len(variant.masks) == 2 else variant.masks[0]))
    if variant.dtype != "float32":
        flags.append(f"--dtype {variant.dtype}")
    return " ".join(flags) or "(no options)"
