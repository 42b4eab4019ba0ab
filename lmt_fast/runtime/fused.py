"""The fused runtime: a LOMIT generator prepared for fast inference on our own kernels.

    from lmt_fast.runtime.fused import FusedGenerator
    fast = FusedGenerator(generator, device="cpu", dtype=torch.bfloat16)
    out = fast(x_in, x_ex)                        # LOMITGenerator's inference interface
    code = fast.encode_exemplar(x_ex); fast.translate_encoded(x_in, code)

What preparing does, and why (`prepare_generator`):
  * a copy in eval mode, so the caller's module is never changed;
  * `fold_norms`: BatchNorm (mask network) and running-statistics IN (compat="official") become the
    preceding conv's weights and bias, removing a full read and write of those activations;
  * every "in" / "ln" norm on one fused op backend (cpu / cuda / triton: statistics, affine, activation
    and residual in one pass); the reference backend is refused, since that would not be this runtime;
  * the decoder's HAdaIN through the region_adain kernel for both compat modes (`FusedDecoder`);
  * each nearest-x2-upsample + 5x5 conv of the decoder computed as four 3x3 convs on the small map
    (`UpsampleConv`): the same numbers with 2.8x fewer multiply-adds and no upsampled copy;
  * on the CPU in float32, every wide 3x3 conv (residual blocks, mask network, the decoder's phase
    convs) by Winograd F(4x4, 3x3) (`lmt_fast.runtime.winograd`): 4x fewer multiply-adds, about 2x faster
    convs, at ~5x the float32 rounding error of a direct conv (`winograd=False` turns it off);
  * weights and activations channels_last (what oneDNN / cuDNN convs run fastest, and what our kernels
    read in place);
  * optional float16 / bfloat16 weights and activations; the op family keeps statistics in float32.
On CUDA, each inference path is captured as a CUDA graph per input shape (`cuda_graphs=False` turns it
off) and replayed, which removes the launch overhead that dominates small batches.

FusedGenerator has LOMITGenerator's inference interface, including `paired_forward` /
`paired_forward_cached` (the split paired forward that the Translator's exemplar cache reuses).
"""
from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast import ops
from lmt_fast.models.fold import fold_norms
from lmt_fast.models.layers import _FUSABLE, ConvNormAct, Norm
from lmt_fast.models.lomit import Decoder, ExemplarCode, GeneratorOutput, LOMITGenerator, PairedExemplar
from lmt_fast.runtime import winograd as winograd_convs
from lmt_fast.runtime.winograd import (WINOGRAD_DTYPES, WinogradConvNormAct, use_winograd, winograd_conv2d,
                                       winograd_weight)

# The ops the generator calls; one backend must run all of them.
FUSED_OPS = ("instance_norm", "layer_norm", "highway_adain")
# official_highway_adain's eps (and ops.highway_adain's default).
HADAIN_EPS = 1e-5
DEFAULT_MAX_GRAPHS = 8
# The fused op backends that could serve each device type (for saying why none does).
FUSED_BACKENDS_BY_DEVICE = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}


class FusedRuntimeUnavailable(RuntimeError):
    """No fused op backend runs on this device and dtype; the message says why."""


# --------------------------------------------------------------------------------------------------
# Which op backend
# --------------------------------------------------------------------------------------------------


def fused_op_backend(device, dtype: torch.dtype, backend: str = "auto") -> str:
    """The fused op backend that runs every op the generator needs on (device, dtype).

    "auto" picks the fastest; a name is checked. Raises FusedRuntimeUnavailable naming the reason when
    only the reference implementation could run (e.g. lmt_fast._C not built, or a dtype it lacks).
    """
    from lmt_fast.ops import backends

    device = torch.device(device)
    if backend == "reference":
        raise FusedRuntimeUnavailable("the fused runtime runs on a fused op backend, not 'reference' (the "
                                      "plain-PyTorch spec); use the eager backend for it")
    try:
        chosen = {ops.resolve_backend(backend, device, op=op, dtype=dtype) for op in FUSED_OPS}
    except ValueError as exc:
        raise FusedRuntimeUnavailable(str(exc)) from None
    fused = chosen - {"reference"}
    if len(fused) == 1 and len(chosen) == 1:
        return fused.pop()
    relevant = FUSED_BACKENDS_BY_DEVICE.get(device.type, ())
    problems = [f"{name}: {why}" for name, why in sorted(backends.unavailable.items()) if name in relevant]
    usable = [b for b in ops.available_backends(device) if b != "reference"]
    detail = "; ".join(problems) or f"registered fused backends {usable} do not all run {list(FUSED_OPS)} in {dtype}"
    raise FusedRuntimeUnavailable(f"no fused op backend runs on {device.type} with {dtype} ({detail})")


def fused_unavailable_reason(device, dtype: torch.dtype) -> Optional[str]:
    """None if the fused runtime can run on (device, dtype), else why not."""
    try:
        fused_op_backend(device, dtype)
    except FusedRuntimeUnavailable as exc:
        return str(exc)
    return None


# --------------------------------------------------------------------------------------------------
# Layers of the prepared generator
# --------------------------------------------------------------------------------------------------


def _phase_kernels(weight: torch.Tensor, radius: int) -> torch.Tensor:
    """The k x k kernel seen through a nearest x2 upsample: four (2t+1)^2 kernels on the small map.

    Output pixel 2i+a of the upsampled map reads upsampled pixels 2i+a+d (|d| <= radius), i.e. small-map
    pixels i + (a+d)//2; taps landing on the same small pixel are summed. Order (cout, a, b) matches
    pixel_shuffle. Summed in float64 so rounding does not depend on the storage dtype.
    """
    t = math.ceil(radius / 2)
    k = 2 * radius + 1
    taps = torch.zeros(2, 2 * t + 1, k, dtype=torch.float64, device=weight.device)
    for a in (0, 1):
        for d in range(-radius, radius + 1):
            taps[a, (a + d) // 2 + t, d + radius] = 1
    phases = torch.einsum("aty,oiyx,bsx->oabits", taps, weight.double(), taps)
    cout, cin = weight.shape[:2]
    return phases.reshape(4 * cout, cin, 2 * t + 1, 2 * t + 1)


def _upsampled_source(start: int, stop: int, size: int, device) -> torch.Tensor:
    """Small-map indices read at positions start..stop-1 of the reflect-padded x2 upsampled axis.

    Built with device ops only, so it can be captured in a CUDA graph.
    """
    u = torch.arange(start, stop, device=device)
    n = 2 * size
    u = torch.where(u < 0, -u, u)
    u = torch.where(u >= n, 2 * (n - 1) - u, u)
    return torch.div(u, 2, rounding_mode="floor")


class UpsampleConv(nn.Module):
    """`block(F.interpolate(x, scale_factor=2, mode="nearest"))` without building the upsampled map.

    A nearest x2 upsample repeats each pixel, so a k x k conv over it is, per output phase (a, b), a
    smaller conv over x: one conv with 4x the output channels, then pixel_shuffle. For the decoder's 5x5
    convs that is 4 * 9 instead of 4 * 25 multiply-adds per small pixel. Padding x by replication
    reproduces the reflect padding of the upsampled map except on the outermost radius - 1 lines (there
    the reflection reaches past the first repeated pixel); those are recomputed exactly with the original
    conv on thin strips (about 1% of the work at 128x128).
    """

    def __init__(self, block: ConvNormAct):
        super().__init__()
        conv = block.conv
        k = conv.kernel_size
        if (k[0] != k[1] or k[0] % 2 == 0 or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
                or block.padding != k[0] // 2):
            raise ValueError(f"UpsampleConv needs a stride-1 odd square conv with 'same' reflect padding, got {conv}")
        self.block = block
        self.radius = block.padding
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
        with torch.no_grad():
            self.register_buffer("phase_weight", _phase_kernels(conv.weight, self.radius).to(conv.weight.dtype))
            self.register_buffer("phase_bias", bias.detach().repeat_interleave(4).clone())
        self.register_buffer("phase_winograd", None)

    def use_winograd(self, min_channels: int | None = None) -> bool:
        """Run the phase conv (3x3 for the decoder's 5x5 kernels) by Winograd F(4x4, 3x3) where it applies."""
        min_channels = winograd_convs.MIN_CHANNELS if min_channels is None else min_channels
        w = self.phase_weight
        if (tuple(w.shape[2:]) != (3, 3) or w.dtype not in WINOGRAD_DTYPES
                or min(w.shape[0], w.shape[1]) < min_channels):
            return False
        self.phase_winograd = winograd_weight(w)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        h, w = x.shape[-2:]
        if 2 * min(h, w) <= r:  # too small for reflect padding of the upsampled map: the literal form
            return self.block(F.interpolate(x, scale_factor=2, mode="nearest"))
        padded = F.pad(x, (math.ceil(r / 2),) * 4, mode="replicate")
        if self.phase_winograd is not None:
            y = winograd_conv2d(padded, self.phase_winograd, self.phase_bias)
        else:
            y = F.conv2d(padded, self.phase_weight, self.phase_bias)
        y = F.pixel_shuffle(y, 2)
        if r > 1:
            self._recompute_border(x, y, r - 1)
        return self.block.norm(y, self.block.activation)

    def _recompute_border(self, x: torch.Tensor, y: torch.Tensor, lines: int) -> None:
        """Overwrite the outer `lines` lines of y on each side with the literal conv's values."""
        r, conv, dev = self.radius, self.block.conv, x.device
        h, w = x.shape[-2:]
        rows, cols = _upsampled_source(-r, 2 * h + r, h, dev), _upsampled_source(-r, 2 * w + r, w, dev)

        def strip(row_index, col_index):
            return F.conv2d(x.index_select(2, row_index).index_select(3, col_index), conv.weight, conv.bias)

        y[:, :, :lines, :] = strip(_upsampled_source(-r, lines + r, h, dev), cols)
        y[:, :, 2 * h - lines:, :] = strip(_upsampled_source(2 * h - lines - r, 2 * h + r, h, dev), cols)
        y[:, :, :, :lines] = strip(rows, _upsampled_source(-r, lines + r, w, dev))
        y[:, :, :, 2 * w - lines:] = strip(rows, _upsampled_source(2 * w - lines - r, 2 * w + r, w, dev))


def official_gamma_scale(c: torch.Tensor, eps: float = HADAIN_EPS) -> torch.Tensor:
    """(N, C) factor turning region_adain's normaliser into the official HAdaIN's.

    region_adain divides by sqrt(var + eps); official_highway_adain by (std of row stds + eps). Scaling
    gamma by sqrt(var + eps) / (std_rows + eps) makes the kernel compute the official formula. The
    statistics are taken in float32 (float64 stays float64) whatever the storage dtype.
    """
    ca = c.double() if c.dtype == torch.float64 else c.float()
    var = ca.var(dim=(2, 3), correction=0)
    std_rows = ca.std(dim=3).std(dim=2)
    return torch.sqrt(var + eps) / (std_rows + eps)


class FusedDecoder(nn.Module):
    """The Decoder's computation with HAdaIN on the region_adain kernel and `UpsampleConv` layers.

    Holds the decoder's own layers (same weights); only the order of operations inside the upsampling
    convs and the route of HAdaIN change.
    """

    style_affine = Decoder.style_affine

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.compat = decoder.compat
        self.backend = decoder.backend
        self.mlp_fg, self.mlp_bg = decoder.mlp_fg, decoder.mlp_bg
        self.blocks = decoder.blocks
        self.up = nn.ModuleList(UpsampleConv(layer) for layer in decoder.up)
        self.out = decoder.out

    def forward(self, c: torch.Tensor, m: torch.Tensor, s_fg: torch.Tensor, s_bg: torch.Tensor) -> torch.Tensor:
        gamma_f, beta_f = self.style_affine(s_fg, "foreground")
        gamma_b, beta_b = self.style_affine(s_bg, "background")
        if self.compat == "official":
            scale = official_gamma_scale(c)
            gamma_f, gamma_b = gamma_f * scale, gamma_b * scale
        x = ops.highway_adain(c, m, gamma_f, beta_f, gamma_b, beta_b, eps=HADAIN_EPS, backend=self.backend)
        for block in self.blocks:
            x = block(x)
        for layer in self.up:
            x = layer(x)
        return self.out(x)


# --------------------------------------------------------------------------------------------------
# Preparing a generator
# --------------------------------------------------------------------------------------------------


def winograd_default(device, dtype: torch.dtype) -> bool:
    """Winograd 3x3 convs where they pay and keep float32 accuracy: CPU, float32 (cuDNN picks its own on CUDA)."""
    return torch.device(device).type == "cpu" and dtype == torch.float32


def prepare_generator(generator: LOMITGenerator, device, dtype: torch.dtype, backend: str,
                      winograd: bool = False) -> LOMITGenerator:
    """A copy of `generator` ready for the fused runtime (see the module docstring for each step)."""
    if winograd and dtype not in WINOGRAD_DTYPES:
        raise ValueError(f"Winograd convs run in float32/float64 only, not {dtype} (their transforms need the "
                         "mantissa); pass winograd=False")
    # Fold and derive kernels in float32 from the caller's weights, then cast once: rounding happens
    # once, on the final weights.
    module = copy.deepcopy(generator).to(device=torch.device(device), dtype=torch.float32)
    module = fold_norms(module, inplace=True)
    module.decoder = FusedDecoder(module.decoder)
    module = module.to(dtype=dtype)
    if winograd:
        use_winograd(module)
        for layer in module.decoder.up:
            layer.use_winograd()
    module = module.to(memory_format=torch.channels_last)
    module.set_backend(backend)
    module.requires_grad_(False)
    check_fused(module, backend)
    return module


def check_fused(module: nn.Module, backend: str) -> None:
    """Raise if any normalisation of `module` would run outside the fused op backend `backend`."""
    for name, layer in module.named_modules():
        if isinstance(layer, Norm):
            if layer.kind not in ("in", "ln", "none"):
                raise RuntimeError(f"{name} is a {layer.kind!r} norm left unfolded; the fused runtime folds every "
                                   "fixed-statistics norm (lmt_fast.models.fold)")
            if layer.kind != "none" and layer.backend != backend:
                raise RuntimeError(f"{name} runs on op backend {layer.backend!r}, not {backend!r}")
        if isinstance(layer, (ConvNormAct, WinogradConvNormAct)) and layer.norm.kind in ("in", "ln") and layer.activation not in _FUSABLE:
            raise RuntimeError(f"{name}: activation {layer.activation!r} after a {layer.norm.kind!r} norm cannot be "
                               "fused into the norm kernel")
    decoder = getattr(module, "decoder", None)
    if not isinstance(decoder, FusedDecoder) or decoder.backend != backend:
        raise RuntimeError("the decoder's HAdaIN must run through FusedDecoder on the fused op backend")


# --------------------------------------------------------------------------------------------------
# CUDA graphs
# --------------------------------------------------------------------------------------------------


class _Captured:
    def __init__(self, graph, inputs, outputs):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class CudaGraphs:
    """One CUDA graph per (path, input shapes and dtypes, which optional inputs are given), LRU-bounded.

    A graph replays fixed kernels on fixed buffers: each call copies its inputs into the graph's static
    input tensors, replays, and returns copies of the static outputs (the next replay overwrites them).
    A path that fails to capture runs eagerly from then on, with one warning saying why.
    """

    def __init__(self, max_graphs: int = DEFAULT_MAX_GRAPHS, warmup: int = 2):
        self.max_graphs = max_graphs
        self.warmup = warmup
        self._graphs: OrderedDict = OrderedDict()
        self.failures: dict = {}
        self.captures = 0
        self.replays = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def run(self, path: str, fn: Callable, inputs: tuple) -> tuple:
        key = (path, tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs))
        if key in self.failures:
            return fn(*inputs)
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._capture(fn, inputs)
            except Exception as exc:  # noqa: BLE001  (an op that cannot be captured: run eagerly, say why)
                self.failures[key] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"lmt_fast fused runtime: CUDA graph capture of {path} failed, running it eagerly "
                              f"({self.failures[key]})", RuntimeWarning, stacklevel=3)
                return fn(*inputs)
            self._graphs[key] = captured
            self.captures += 1
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            for static, t in zip(captured.inputs, inputs):
                if t is not None:
                    static.copy_(t)
        captured.graph.replay()
        self.replays += 1
        return tuple(None if t is None else t.clone() for t in captured.outputs)

    def _capture(self, fn: Callable, inputs: tuple) -> _Captured:
        static = tuple(None if t is None else t.clone() for t in inputs)
        # Warm up on a side stream (lazy initialisation, cuDNN / Triton autotuning must not be captured).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                fn(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn(*static)
        return _Captured(graph, static, outputs)


# --------------------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------------------


class FusedGenerator:
    """LOMITGenerator's inference interface on a prepared copy of a generator (see the module docstring).

    Inputs are cast to the runtime dtype and channels_last; outputs come back in the runtime dtype.
    """

    backend = "fused"

    def __init__(self, generator: LOMITGenerator, device=None, dtype: torch.dtype = torch.float32,
                 backend: str = "auto", cuda_graphs: bool = True, max_graphs: int = DEFAULT_MAX_GRAPHS,
                 winograd: bool | None = None):
        if not isinstance(generator, LOMITGenerator):
            raise TypeError(f"FusedGenerator prepares a LOMITGenerator, got {type(generator).__name__}")
        if device is None:
            device = next(generator.parameters()).device
        self.device = torch.device(device)
        self.dtype = dtype
        self.config = generator.config
        self.op_backend = fused_op_backend(self.device, dtype, backend)
        # None: Winograd 3x3 convs where they are the default (CPU float32); True / False forces.
        self.winograd = winograd_default(self.device, dtype) if winograd is None else bool(winograd)
        self.module = prepare_generator(generator, self.device, dtype, self.op_backend, self.winograd)
        # Graphs only where they exist and pay: CUDA. Off by request.
        self.graphs = CudaGraphs(max_graphs) if cuda_graphs and self.device.type == "cuda" else None

    @property
    def cuda_graphs(self) -> bool:
        return self.graphs is not None

    # -- LOMITGenerator's inference interface -----------------------------------------------------
    @torch.inference_mode()
    def forward(self, x_in: torch.Tensor, x_ex: torch.Tensor, input_mask: torch.Tensor | None = None,
                exemplar_mask: torch.Tensor | None = None) -> GeneratorOutput:
        """LOMITGenerator.forward: the paired translation (twin encoders batched)."""
        inputs = (self._image(x_in), self._image(x_ex), self._cast(input_mask), self._cast(exemplar_mask))
        return GeneratorOutput(*self._run("forward", _module_forward, inputs))

    __call__ = forward

    @torch.inference_mode()
    def encode_exemplar(self, x_ex: torch.Tensor, exemplar_mask: torch.Tensor | None = None) -> ExemplarCode:
        """LOMITGenerator.encode_exemplar (runs once per exemplar: not graph-captured)."""
        return self.module.encode_exemplar(self._image(x_ex), self._cast(exemplar_mask))

    @torch.inference_mode()
    def translate_encoded(self, x_in: torch.Tensor, exemplar: ExemplarCode,
                          input_mask: torch.Tensor | None = None) -> GeneratorOutput:
        """LOMITGenerator.translate_encoded; the code may come from any backend (its content is unused)."""
        code = exemplar.expand(x_in.shape[0])
        inputs = (self._image(x_in), self._cast(code.attention), self._cast(code.mask), self._cast(code.style_fg),
                  self._cast(input_mask))
        image, m_in = self._run("translate_encoded", _module_translate_encoded, inputs)
        return GeneratorOutput(image, m_in, code.mask)

    @torch.inference_mode()
    def paired_forward(self, x_in, x_ex, input_mask=None, exemplar_mask=None):
        """LOMITGenerator.paired_forward: the paired translation and the exemplar's reusable part."""
        x_ex = self._image(x_ex)
        inputs = (self._image(x_in), x_ex, self._cast(input_mask), self._cast(exemplar_mask))
        image, m_in, m_ex, c_ex, a_ex, mask, s_fg = self._run("paired_forward", _module_paired_forward, inputs)
        return GeneratorOutput(image, m_in, m_ex), PairedExemplar(x_ex, c_ex, a_ex, mask, s_fg)

    @torch.inference_mode()
    def paired_forward_cached(self, x_in, exemplar: PairedExemplar, input_mask=None) -> GeneratorOutput:
        """LOMITGenerator.paired_forward_cached."""
        ex = exemplar.expand(x_in.shape[0])
        image = None if ex.style_fg is not None else self._image(ex.image)  # unused when the style is kept
        inputs = (self._image(x_in), image, self._cast(ex.content), self._cast(ex.attention), self._cast(ex.mask),
                  self._cast(ex.style_fg), self._cast(input_mask))
        return GeneratorOutput(*self._run("paired_forward_cached", _module_paired_forward_cached, inputs))

    # -- plumbing ---------------------------------------------------------------------------------
    def _run(self, path: str, fn: Callable, inputs: tuple) -> tuple:
        def bound(*tensors):
            return tuple(fn(self.module, *tensors))

        if self.graphs is None:
            return bound(*inputs)
        return self.graphs.run(path, bound, inputs)

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.device, dtype=self.dtype).contiguous(memory_format=torch.channels_last)

    def _cast(self, t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device=self.device, dtype=self.dtype)

    def __repr__(self) -> str:
        graphs = f", cuda_graphs={len(self.graphs)} captured" if self.graphs is not None else ""
        return (f"FusedGenerator(op_backend={self.op_backend!r}, device={self.device}, dtype={self.dtype}, "
                f"winograd={self.winograd}{graphs})")


def _module_forward(g, x_in, x_ex, m_in, m_ex):
    out = g(x_in, x_ex, m_in, m_ex)
    return out.image, out.input_mask, out.exemplar_mask


def _module_translate_encoded(g, x_in, attention, mask, style_fg, m_in):
    # translate_encoded reads only the attention and style of the code (and passes its mask through).
    code = ExemplarCode(attention.new_empty((attention.shape[0], 0, 1, 1)), attention, mask, style_fg)
    out = g.translate_encoded(x_in, code, m_in)
    return out.image, out.input_mask


# Flat-tuple forms of the paired paths (what a CUDA graph captures: tensors in, tensors out).
def _module_paired_forward(g, x_in, x_ex, m_in, m_ex):
    out, ex = g.paired_forward(x_in, x_ex, m_in, m_ex)
    return out.image, out.input_mask, out.exemplar_mask, ex.content, ex.attention, ex.mask, ex.style_fg


def _module_paired_forward_cached(g, x_in, x_ex, c_ex, a_ex, m_ex, s_fg, m_in):
    out = g.paired_forward_cached(x_in, PairedExemplar(x_ex, c_ex, a_ex, m_ex, s_fg), m_in)
    return out.image, out.input_mask, out.exemplar_mask
