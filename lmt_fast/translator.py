"""Translator: the public API of lmt_fast.

    from lmt_fast import Translator
    t = Translator.load("run/ckpt")                 # or Translator.from_pretrained()
    r = t.translate("input.png", "exemplar.png")     # r.image, r.input_mask, r.exemplar_mask, r.notes
    style = t.encode_exemplar("exemplar.png")        # encode once ...
    results = t.translate_batch(["a.png", "b.png"], style)   # ... reuse for many inputs

Pre-processing policy (`resize`):
    "model" (default)  every image is resized (bilinear, antialiased) to the model's square training size
                       and the outputs are resized back to the input's own size; the aspect ratio is not
                       kept, and the result's `notes` say so whenever a resize happened.
    "none"             images run at their own size, which must be a multiple of the model's
                       `size_multiple` (16 for the paper model); anything else is an error.
Images are never cropped. Grayscale and RGBA inputs are converted to RGB and the notes say so.
Outputs come back as the input came in: a path or PIL image gives a PIL image, a uint8 HWC array a uint8
HWC array, a float tensor in [-1, 1] a tensor of the same shape, dtype and device.

Backends of a checkpoint (`backend=`; `Translator.backend` names the one that runs, `backend_reason`
says why when "auto" could not pick "fused"):
    "auto"         "fused" where a fused op backend runs on the device and dtype, else "eager"
    "fused"        lmt_fast.runtime.fused.FusedGenerator: BatchNorm / running IN folded into the convs,
                   the fused norm kernels, channels_last, CUDA graphs on CUDA (`cuda_graphs=False` turns
                   them off); an error naming the reason where no fused op backend runs
    "eager"        the module as it is, on the reference ops (the spec)
    an op backend  the module as it is, its norms on that op backend ("cpu", "cuda", "triton", ...)
    "onnxruntime", "tensorrt"   exported graphs / engines (lmt_fast.runtime)

Exemplar cache (`exemplar_cache=8` entries, 0 turns it off): `translate(input, exemplar)` with an
exemplar image seen before (the same prepared pixels and exemplar mask, compared by a hash of their
bytes) reuses what the paired forward computes from the exemplar alone: its content code and channel
attention, and with a given exemplar mask its foreground style too. Without a given mask the exemplar's
mask is conditioned on each input (Mask(c_ex, a_in)), so that mask and the style it gates are
recomputed. Results equal the uncached ones up to float rounding (the input's encoders then run without
the exemplar in their batch). `cache_info()` counts hits and misses. Exported graphs and engines have no
cache (they do not give the exemplar's content code back).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from lmt_fast import image_inputs, ops
from lmt_fast.image_inputs import PreparedImage
from lmt_fast.io import load_checkpoint
from lmt_fast.models import ExemplarCode, LOMITGenerator
from lmt_fast.runtime import fused

RESIZE_POLICIES = ("model", "none")
DTYPES = image_inputs.DTYPES
MODEL_BACKENDS = ("auto", "eager", "fused")  # plus every op backend name (lmt_fast.ops.available_backends())
RUNTIME_BACKENDS = ("onnxruntime", "tensorrt")  # run the generator as exported graphs / engines, not modules
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "default"
DEFAULT_EXEMPLAR_CACHE = 8  # exemplars whose input-independent encoding translate() keeps


class TranslatorError(ValueError):
    """Bad input to the Translator; the message names the problem."""


@dataclass
class TranslationResult:
    image: Any                 # same kind as the input (PIL / uint8 array / tensor), at the input's size
    input_mask: Any            # the mask used on the input, at the input's size (PIL "L" / float array / tensor)
    exemplar_mask: Any         # the exemplar's mask, at the exemplar's size
    notes: list[str] = field(default_factory=list)  # what pre-processing did (resizes, conversions)


@dataclass
class ExemplarStyle:
    """An exemplar encoded once by `Translator.encode_exemplar`, reusable for any number of inputs."""

    code: ExemplarCode
    mask: Any                  # the exemplar's mask at the exemplar's size, in the exemplar's kind
    notes: list[str] = field(default_factory=list)


class Translator:
    def __init__(self, generator: LOMITGenerator, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype | None = None, backend: str = "auto", resize: str = "model",
                 exemplar_cache: int = DEFAULT_EXEMPLAR_CACHE, cuda_graphs: bool = True):
        self.device = _parse_device(device)
        self.dtype = _parse_dtype(dtype)
        self.resize = _choice("resize", resize, RESIZE_POLICIES)
        self.config = generator.config
        self.backend_reason: str | None = None  # why "auto" could not pick "fused"
        if isinstance(exemplar_cache, bool) or not isinstance(exemplar_cache, int) or exemplar_cache < 0:
            raise TranslatorError(f"exemplar_cache must be an int >= 0 (entries; 0 turns it off), "
                                  f"got {exemplar_cache!r}")
        self._exemplar_cache = None
        if isinstance(generator, fused.FusedGenerator):
            self.backend = "fused"
            self.generator = _check_fused_generator(generator, self.device, self.dtype)
        elif backend in RUNTIME_BACKENDS or not isinstance(generator, torch.nn.Module):
            # The generator runs as exported graphs or engines (lmt_fast.runtime), with the same three methods.
            self.generator = _runtime_generator(generator, self.device, self.dtype, backend)
            self.backend = self.generator.backend
            return  # graphs and engines do not give the exemplar's content code back: no exemplar cache
        else:
            self.backend, self.backend_reason = _resolve_translator_backend(backend, self.device, self.dtype)
            if self.backend == "fused":
                self.generator = fused.FusedGenerator(generator, self.device, self.dtype, cuda_graphs=cuda_graphs)
            else:
                op_backend = "reference" if self.backend == "eager" else self.backend
                self.generator = generator.to(device=self.device, dtype=self.dtype).eval()
                self.generator.set_backend(op_backend)
                self.generator.requires_grad_(False)
        if exemplar_cache:
            self._exemplar_cache = _ExemplarCache(exemplar_cache)

    @property
    def op_backend(self) -> str | None:
        """The op backend the generator's norms run on (None for exported graphs and engines)."""
        if isinstance(self.generator, fused.FusedGenerator):
            return self.generator.op_backend
        if self.backend in RUNTIME_BACKENDS:
            return None
        return "reference" if self.backend == "eager" else self.backend

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: str | torch.dtype | None = None, backend: str = "auto", resize: str = "model",
             compat: str | None = None, plugins: Sequence[str | os.PathLike] | None = None,
             exemplar_cache: int = DEFAULT_EXEMPLAR_CACHE, cuda_graphs: bool = True) -> "Translator":
        """Load a checkpoint (directory or .safetensors file written by lmt_fast.io.save_checkpoint).

        backend="onnxruntime" runs the checkpoint's generator as ONNX graphs (exported on first use and
        cached, see lmt_fast.export.cache). A .onnx file, or a directory of them, exported by
        `lmt-fast export` loads with backend "auto" or "onnxruntime"; its dtype is the graphs' dtype.
        A TensorRT engine (.plan / .engine, from `lmt-fast build-engine` or trtexec), or a directory of
        them, loads with backend "auto" or "tensorrt" (lmt_fast.runtime.tensorrt.TensorRTGenerator): the
        engines run on a CUDA GPU, pre- and post-processing on `device`; `plugins` are plugin libraries
        to load first (default $LMT_FAST_TRT_PLUGINS), e.g. liblmt_trt_plugin.so for --custom-ops engines.
        exemplar_cache, cuda_graphs: see the class docstring (checkpoints only).
        """
        from lmt_fast.runtime.tensorrt import is_engine_path

        if is_engine_path(path):
            return cls._load_engine(path, device, dtype, backend, resize, compat, plugins)
        if _is_onnx_export(path):
            return cls._load_onnx(path, device, dtype, backend, resize, compat)
        overrides = {"compat": compat} if compat is not None else None
        checkpoint = load_checkpoint(path, device="cpu", config_overrides=overrides)
        return cls(checkpoint.generator, device=device, dtype=dtype, backend=backend, resize=resize,
                   exemplar_cache=exemplar_cache, cuda_graphs=cuda_graphs)

    @classmethod
    def _load_onnx(cls, path, device, dtype, backend, resize, compat) -> "Translator":
        from lmt_fast.export.contract import ContractError
        from lmt_fast.runtime.onnxruntime import ExecutionProviderError, OnnxRuntimeGenerator

        if backend not in ("auto", "onnxruntime"):
            raise TranslatorError(f"{path} is an ONNX export; it runs with backend 'onnxruntime', not {backend!r}")
        try:
            generator = OnnxRuntimeGenerator.from_onnx(path, device=device)
        except (ContractError, ExecutionProviderError) as exc:
            raise TranslatorError(str(exc)) from None
        if compat is not None and compat != generator.config.compat:
            raise TranslatorError(f"{path} was exported with compat={generator.config.compat!r}; "
                                  f"compat={compat!r} needs a new export")
        if dtype is not None and _parse_dtype(dtype) != DTYPES[generator.dtype]:
            raise TranslatorError(f"{path} holds {generator.dtype} graphs; dtype={dtype!r} needs a new export "
                                  f"(lmt-fast export --dtype ...)")
        return cls(generator, device=device, dtype=generator.dtype, backend="onnxruntime", resize=resize)

    @classmethod
    def _load_engine(cls, path, device, dtype, backend, resize, compat, plugins) -> "Translator":
        from lmt_fast.export.contract import ContractError
        from lmt_fast.export.tensorrt import TensorRTUnavailableError
        from lmt_fast.runtime.tensorrt import PluginLoadError, TensorRTGenerator

        if backend not in ("auto", "tensorrt"):
            raise TranslatorError(f"{path} is a TensorRT engine; it runs with backend 'tensorrt', not {backend!r}")
        _parse_device(device)  # a CUDA device that is not there is reported as for any model
        try:
            generator = TensorRTGenerator.from_plan(path, device=device, plugins=plugins)
        except (ContractError, TensorRTUnavailableError, PluginLoadError, RuntimeError) as exc:
            raise TranslatorError(str(exc)) from None
        if compat is not None and compat != generator.config.compat:
            raise TranslatorError(f"{path} was built from a compat={generator.config.compat!r} export; "
                                  f"compat={compat!r} needs a new export and engine")
        if dtype is not None and _parse_dtype(dtype) != DTYPES[generator.dtype]:
            raise TranslatorError(f"{path} holds {generator.dtype} engines; dtype={dtype!r} needs an engine built "
                                  f"from a {_parse_dtype(dtype)} export (lmt-fast export --dtype ...)")
        return cls(generator, device=device, dtype=generator.dtype, backend="tensorrt", resize=resize)

    @classmethod
    def from_pretrained(cls, name: str = "default", **kwargs) -> "Translator":
        """The model embedded in the package (no download)."""
        path = ASSETS / name
        if not (path / "config.json").is_file():
            shipped = sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file()) if ASSETS.is_dir() else []
            if name == "default" and not shipped:
                raise FileNotFoundError(
                    "no embedded default model is shipped in this version of lmt_fast yet; load a checkpoint "
                    "with Translator.load(path) (train one with lmt-train, or write one with "
                    "lmt_fast.io.save_checkpoint)")
            raise FileNotFoundError(f"no embedded model named {name!r}; shipped: {shipped or 'none'}")
        return cls.load(path, **kwargs)

    # -- translation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def translate(self, input, exemplar, input_mask=None, exemplar_mask=None) -> TranslationResult:
        """Translate one input with one exemplar (image or ExemplarStyle).

        With an exemplar image, each image's mask is conditioned on the other one (the paper's pairing).
        A given mask (the paper's user intervention) replaces the learned one; it must have its image's
        size, with values in [0, 1].
        """
        src = self._prepare(input, "input")
        m_in = self._prepare_mask(input_mask, src, "input_mask")
        if isinstance(exemplar, ExemplarStyle):
            if exemplar_mask is not None:
                raise TranslatorError("exemplar_mask cannot be given with an encoded exemplar; pass it to "
                                      "encode_exemplar instead")
            out = self.generator.translate_encoded(self._cast(src.tensor), exemplar.code, self._cast(m_in))
            return self._result(out.image, out.input_mask, src, exemplar.mask, src.notes + exemplar.notes)
        ex = self._prepare(exemplar, "exemplar")
        m_ex = self._prepare_mask(exemplar_mask, ex, "exemplar_mask")
        if src.tensor.shape != ex.tensor.shape:
            raise TranslatorError(f"with resize='none' the input ({src.size[1]}x{src.size[0]}) and the exemplar "
                                  f"({ex.size[1]}x{ex.size[0]}) must have the same size; use encode_exemplar "
                                  "or resize='model'")
        out = self._paired(src.tensor, ex.tensor, m_in, m_ex)
        return self._result(out.image, out.input_mask, src, image_inputs.mask_back(out.exemplar_mask, ex),
                            src.notes + ex.notes)

    def _paired(self, x_in, x_ex, m_in, m_ex):
        """The paired forward, reusing the exemplar's input-independent part when it is cached."""
        x_in, x_ex, m_in, m_ex = (self._cast(t) for t in (x_in, x_ex, m_in, m_ex))
        if self._exemplar_cache is None:
            return self.generator(x_in, x_ex, m_in, m_ex)
        key = _exemplar_key(x_ex, m_ex)
        parts = self._exemplar_cache.get(key)
        if parts is not None:
            return self.generator.paired_forward_cached(x_in, parts, m_in)
        out, parts = self.generator.paired_forward(x_in, x_ex, m_in, m_ex)
        self._exemplar_cache.put(key, parts)
        return out

    def cache_info(self) -> dict:
        """The exemplar cache's hits, misses, entries and capacity (capacity 0: no cache)."""
        if self._exemplar_cache is None:
            return {"hits": 0, "misses": 0, "entries": 0, "capacity": 0}
        return self._exemplar_cache.info()

    def clear_cache(self) -> None:
        """Forget every cached exemplar (the hit and miss counts stay)."""
        if self._exemplar_cache is not None:
            self._exemplar_cache.clear()

    @torch.inference_mode()
    def encode_exemplar(self, exemplar, exemplar_mask=None) -> ExemplarStyle:
        """Encode an exemplar once for many inputs.

        Without a given mask the exemplar's mask is conditioned on the exemplar itself, since a paired
        mask would depend on each input; results can differ slightly from `translate` with the image.
        """
        ex = self._prepare(exemplar, "exemplar")
        m_ex = self._prepare_mask(exemplar_mask, ex, "exemplar_mask")
        code = self.generator.encode_exemplar(self._cast(ex.tensor), self._cast(m_ex))
        return ExemplarStyle(code, image_inputs.mask_back(code.mask, ex), ex.notes)

    @torch.inference_mode()
    def translate_batch(self, inputs: Sequence, exemplar, input_masks: Sequence | None = None,
                        batch_size: int = 16, progress: bool = False) -> list[TranslationResult]:
        """Translate many inputs with one exemplar (image or ExemplarStyle), batch_size at a time."""
        image_inputs.check_batch(inputs, input_masks, batch_size, TranslatorError, "translate", "input", "input masks")
        style = exemplar if isinstance(exemplar, ExemplarStyle) else self.encode_exemplar(exemplar)
        masks = list(input_masks) if input_masks is not None else [None] * len(inputs)
        results: list[TranslationResult] = []
        starts = range(0, len(inputs), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="translating", unit="batch")
        for start in starts:
            chunk = [self._prepare(x, f"input {start + i}") for i, x in enumerate(inputs[start:start + batch_size])]
            chunk_masks = [self._prepare_mask(m, p, f"input_masks[{start + i}]")
                           for i, (m, p) in enumerate(zip(masks[start:start + batch_size], chunk))]
            results.extend(self._translate_group(chunk, chunk_masks, style))
        return results

    def _translate_group(self, prepared: list[PreparedImage], masks: list, style: ExemplarStyle):
        # Images of one working size run as one batch; mixed sizes (resize="none") run one by one.
        shapes = {p.tensor.shape for p in prepared}
        if len(shapes) > 1 or any(m is None for m in masks) != all(m is None for m in masks):
            return [self._translate_group([p], [m], style)[0] for p, m in zip(prepared, masks)]
        x = torch.cat([p.tensor for p in prepared])
        m = None if masks[0] is None else torch.cat(masks)
        out = self.generator.translate_encoded(self._cast(x), style.code, self._cast(m))
        return [self._result(out.image[i:i + 1], out.input_mask[i:i + 1], p, style.mask, p.notes + style.notes)
                for i, p in enumerate(prepared)]

    # -- pre- and post-processing -----------------------------------------------------------------
    def _prepare(self, image, role: str) -> PreparedImage:
        prepared = image_inputs.read_image(image, role, TranslatorError, "translate")
        prepared.tensor = self._to_working_size(prepared.tensor.to(self.device), role, prepared.notes)
        return prepared

    def _to_working_size(self, x: torch.Tensor, role: str, notes: list[str]) -> torch.Tensor:
        if self.resize == "none":
            image_inputs.check_multiple(x, role, self.config.size_multiple, TranslatorError)
            return x
        h, w = x.shape[-2:]
        s = self.config.image_size
        if (h, w) != (s, s):
            back = f"; its outputs are resized back to {w}x{h}" if role.startswith("input") else ""
            notes.append(f"{role}: {w}x{h} resized to {s}x{s} for the model (aspect ratio not kept){back}")
            x = image_inputs.resize_image(x, (s, s))
        return x

    def _prepare_mask(self, mask, image: PreparedImage, role: str) -> torch.Tensor | None:
        """A user mask at its image's size -> (1, 1, h, w) at content resolution, float32 in [0, 1]."""
        if mask is None:
            return None
        m = image_inputs.read_mask(mask, image, role, TranslatorError, self.device)
        scale = self.config.mask_scale
        content = (m.shape[-2] // scale, m.shape[-1] // scale)
        return F.interpolate(m, size=content, mode="area").clamp_(0, 1)

    def _cast(self, x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(self.dtype)

    def _result(self, image, input_mask, src: PreparedImage, exemplar_mask, notes) -> TranslationResult:
        return TranslationResult(image_inputs.image_back(image, src), image_inputs.mask_back(input_mask, src),
                                 exemplar_mask, list(notes))


class _ExemplarCache:
    """A small LRU map from an exemplar's key to its PairedExemplar, counting hits and misses."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        parts = self._entries.get(key)
        if parts is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return parts

    def put(self, key, parts) -> None:
        self._entries[key] = parts
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def info(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._entries), "capacity": self.capacity}


def _exemplar_key(x_ex: torch.Tensor, mask: torch.Tensor | None) -> tuple:
    """Digests of the prepared exemplar and of its given mask (None when the mask is learned)."""
    return _digest(x_ex), None if mask is None else _digest(mask)


def _digest(t: torch.Tensor) -> str:
    data = t.detach().to("cpu").contiguous()
    h = hashlib.blake2b(f"{data.dtype}|{tuple(data.shape)}|".encode(), digest_size=16)
    h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _is_onnx_export(path) -> bool:
    """A .onnx file, or a directory of them that is not a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        return not (path / "config.json").exists() and any(path.glob("*.onnx"))
    return path.suffix == ".onnx"


def _runtime_generator(generator, device: torch.device, dtype: torch.dtype, backend: str = "onnxruntime"):
    """The generator as exported graphs / engines: a runtime generator as it is (OnnxRuntimeGenerator,
    TensorRTGenerator), or a PyTorch generator exported for onnxruntime."""
    from lmt_fast.runtime.onnxruntime import ExecutionProviderError, OnnxRuntimeGenerator

    names = {v: k for k, v in DTYPES.items()}
    if not isinstance(generator, torch.nn.Module):
        kind = getattr(generator, "backend", "onnxruntime")
        if backend in RUNTIME_BACKENDS and backend != kind:
            raise TranslatorError(f"this generator runs with backend {kind!r}, not {backend!r}")
        if generator.dtype != names[dtype]:
            what = "TensorRT engines" if kind == "tensorrt" else "ONNX graphs"
            raise TranslatorError(f"these {what} are {generator.dtype}, not {names[dtype]}")
        return generator
    if backend == "tensorrt":
        raise TranslatorError("backend 'tensorrt' runs TensorRT engines: export the checkpoint (lmt-fast export), "
                              "build an engine (lmt-fast build-engine) and load the .plan with Translator.load")
    if dtype not in (torch.float32, torch.float16):
        raise TranslatorError(f"the onnxruntime backend runs float32 or float16 graphs, not {names[dtype]}")
    try:
        return OnnxRuntimeGenerator.from_generator(generator, dtype=names[dtype], device=device)
    except ExecutionProviderError as exc:
        raise TranslatorError(str(exc)) from None


def _parse_device(device) -> torch.device:
    return image_inputs.parse_device(device, TranslatorError)


def _parse_dtype(dtype) -> torch.dtype:
    return image_inputs.parse_dtype(dtype, TranslatorError)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise TranslatorError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _resolve_translator_backend(backend: str, device: torch.device, dtype: torch.dtype):
    """(the backend a name resolves to for a checkpoint's module, why "auto" could not pick "fused").

    "auto" -> "fused" where a fused op backend runs on (device, dtype), else "eager" with the reason;
    "fused" -> "fused" or an error naming the reason; "eager" -> "eager"; an op backend name -> itself.
    """
    if backend in ("auto", "fused"):
        reason = fused.fused_unavailable_reason(device, dtype)
        if reason is None:
            return "fused", None
        if backend == "fused":
            raise TranslatorError(f"backend 'fused' is not usable here: {reason}; backend 'eager' runs anywhere")
        return "eager", f"'auto' runs eager on the reference ops: {reason}"
    if backend == "eager":
        return "eager", None
    return image_inputs.resolve_op_backend(backend, device, TranslatorError, _backend_choices(), dtype), None


def _check_fused_generator(generator, device: torch.device, dtype: torch.dtype):
    if generator.device != device or generator.dtype != dtype:
        raise TranslatorError(f"this FusedGenerator runs on {generator.device} in {generator.dtype}, not on {device} "
                              f"in {dtype}; prepare one for {device} / {dtype}")
    return generator


def _resolve_model_backend(backend: str, device: torch.device) -> str:
    """Map a Translator backend name onto the op backend the model's layers use."""
    return image_inputs.resolve_op_backend(backend, device, TranslatorError, _backend_choices())


def _backend_choices() -> list[str]:
    return list(MODEL_BACKENDS + RUNTIME_BACKENDS) + ops.available_backends()
