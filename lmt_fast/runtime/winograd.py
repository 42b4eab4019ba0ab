"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for the fused runtime on the CPU.

A 3x3 stride-1 conv produces each 4x4 output tile from a 6x6 input tile. Winograd's algorithm
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015) transforms the input tile
(B^T d B) and the kernel (G g G^T) into 6x6 "frequency" tiles, multiplies them point by point, summed over
input channels, and transforms back (A^T m A). The sum over channels at each of the 36 points is a matrix
product, so the conv becomes 36 GEMMs of (tiles x C_in) by (C_in x C_out): 36 instead of 144
multiply-adds per output tile and channel pair, 4x fewer. On these CPUs the GEMMs run at about 3/4 of
oneDNN's direct-conv rate, which leaves the 3x3 convs of the generator about 2x faster.

The price is rounding: the transforms mix values of different size (the points 0, +-1, +-2 and infinity),
so the float32 result is about 10-20x further from the exact conv than a direct float32 conv (relative
error ~5e-6 instead of ~3e-7 for 256 input channels; tests/test_winograd.py measures it). That is why it
is only used in float32 and float64, never in bfloat16 / float16, and why the runtime can turn it off.

On the CPU, when lmt_fast._C is built, the two tile transforms run as fused C++ kernels
(`torch.ops.lmt.winograd_input_transform` / `winograd_output_transform`, csrc/cpu/winograd.cpp): one pass
over memory each, with the reflect padding, the tiling, the bias and the crop done inside, where the
torch-op transforms cost about a quarter of the conv. Those torch-op transforms stay as the reference and
as the path on other devices.

Reference: `F.conv2d(x, weight, bias)` on the padded input (a "valid" conv), which the tests compare
against in float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast.models.layers import ConvNormAct

TILE = 4            # output tile side m
TAPS = 3            # kernel side r
SPAN = TILE + TAPS - 1  # input tile side, 6

# F(4, 3) with interpolation points 0, 1, -1, 2, -2 and infinity.
_B_T = ((4, 0, -5, 0, 1, 0),
        (0, -4, -4, 1, 1, 0),
        (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0),
        (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_A_T = ((1, 1, 1, 1, 1, 0),
        (0, 1, -1, 2, -2, 0),
        (0, 1, 1, 4, 4, 0),
        (0, 1, -1, 8, -8, 1))

# Narrower convs leave the GEMMs too small to beat oneDNN's direct conv: in benchmarks/bench_winograd.py
# (2 threads) C = 64 runs at 0.6-1.2x the direct conv's speed, C = 128 at 1.5-2x.
MIN_CHANNELS = 128

# Supported storage dtypes: the transforms need float32's mantissa at least.
WINOGRAD_DTYPES = (torch.float32, torch.float64)


def _matrix(rows, dtype=torch.float64, device=None) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype, device=device)


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """The kernel in the Winograd domain: (36, C_in, C_out), computed in float64, returned in weight's dtype."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (TAPS, TAPS):
        raise ValueError(f"winograd_weight needs a (C_out, C_in, 3, 3) kernel, got {tuple(weight.shape)}")
    g = _matrix(_G, device=weight.device)
    u = g @ weight.detach().double() @ g.T                       # (C_out, C_in, 6, 6)
    c_out, c_in = weight.shape[:2]
    return u.permute(2, 3, 1, 0).reshape(SPAN * SPAN, c_in, c_out).to(weight.dtype).contiguous()


class _Transforms:
    """kron(B^T, B^T) and kron(A^T, A^T): the 2-D tile transforms as one small matrix each (per dtype/device)."""

    _cache: dict = {}

    @classmethod
    def get(cls, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dtype, device)
        if key not in cls._cache:
            b_t, a_t = _matrix(_B_T), _matrix(_A_T)
            cls._cache[key] = (torch.kron(b_t, b_t).to(dtype=dtype, device=device),
                               torch.kron(a_t, a_t).to(dtype=dtype, device=device))
        return cls._cache[key]


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None, pad: int = 0) -> torch.Tensor:
    """`F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, bias)` (stride 1) with u = winograd_weight(weight).

    x: (N, C_in, H, W), any memory format (channels_last avoids one copy); H, W >= 3 once padded. pad: reflect
    padding on all four sides (0 <= pad < H, W), fused into the compiled input transform (F.pad otherwise).
    Returns (N, C_out, H + 2 pad - 2, W + 2 pad - 2) in channels_last memory format. Inference only (the
    compiled transforms have no autograd formula).
    """
    n, c_in, h, w = x.shape
    if u.dim() != 3 or u.shape[0] != SPAN * SPAN or u.shape[1] != c_in:
        raise ValueError(f"transformed weight {tuple(u.shape)} does not fit an input with {c_in} channels")
    if x.dtype not in WINOGRAD_DTYPES or u.dtype != x.dtype:
        raise ValueError(f"winograd_conv2d runs in float32/float64 with matching weights, got {x.dtype} and {u.dtype}")
    if pad < 0 or (pad and (pad >= h or pad >= w)):
        raise ValueError(f"reflect padding by {pad} needs 0 <= pad < H, W, got an input of {h}x{w}")
    h, w = h + 2 * pad, w + 2 * pad
    if h < TAPS or w < TAPS:
        raise ValueError(f"a 3x3 valid conv needs H, W >= 3 (after padding), got {h}x{w}")
    out_h, out_w = h - TAPS + 1, w - TAPS + 1
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    if x.device.type == "cpu" and _compiled_transforms():
        return _conv_by_compiled_transforms(x, u, bias, pad, out_h, out_w, tiles_h, tiles_w)
    if pad:
        x = F.pad(x, (pad,) * 4, mode="reflect")
    return _conv_by_torch_transforms(x, u, bias, out_h, out_w, tiles_h, tiles_w)


def _load_compiled_transforms():
    """lmt_fast.ops.library when lmt_fast._C has the fused tile transforms (built, and new enough), else
    None. The library module also registers their fake kernels, so that they trace."""
    try:
        from lmt_fast.ops import library
    except ImportError:  # no compiled extension
        return None
    return library if library.HAS_WINOGRAD else None


_COMPILED_LIBRARY = _load_compiled_transforms()


def _compiled_transforms() -> bool:
    return _COMPILED_LIBRARY is not None


def _conv_by_compiled_transforms(x, u, bias, pad, out_h, out_w, tiles_h, tiles_w) -> torch.Tensor:
    """The conv with the tile transforms in C++ (csrc/cpu/winograd.cpp): each one pass over memory, the
    input's padding and tiling done by index arithmetic, bias and crop fused into the output transform."""
    if x.stride(1) != 1 and x.shape[1] != 1:
        x = x.contiguous(memory_format=torch.channels_last)   # the transform reads pixels' channels in place
    v = torch.ops.lmt.winograd_input_transform(x, pad, tiles_h, tiles_w)          # (36, tiles, C_in)
    if torch.compiler.is_compiling():  # dynamo refuses out= tensors that are not contiguous
        m = torch.bmm(v, u)
    else:  # planes laid out as v's, which the output transform reads ~1.5x faster
        m = _COMPILED_LIBRARY.winograd_planes(v.shape[1], u.shape[2], x.dtype, x.device)
        torch.bmm(v, u, out=m)                                                    # (36, tiles, C_out)
    if bias is not None:
        bias = bias.to(x.dtype)
    return torch.ops.lmt.winograd_output_transform(m, bias, x.shape[0], out_h, out_w, tiles_h, tiles_w)


def _conv_by_torch_transforms(x, u, bias, out_h, out_w, tiles_h, tiles_w) -> torch.Tensor:
    """The conv with the tile transforms as torch ops (x already padded): the reference for the compiled
    transforms, and the path on other devices."""
    v = _torch_input_transform(x, tiles_h, tiles_w)
    m = torch.bmm(v, u)                                           # (36, tiles, C_out)
    return _torch_output_transform(m, bias, x.shape[0], out_h, out_w, tiles_h, tiles_w)


def _torch_input_transform(x: torch.Tensor, tiles_h: int, tiles_w: int) -> torch.Tensor:
    """B^T d B for every 6x6 tile d of x (N, C, H, W), zero-extended to whole tiles: (36, tiles, C)."""
    n, c_in, h, w = x.shape
    to_tiles, _ = _Transforms.get(x.dtype, x.device)
    # Zero-extend to whole tiles (the extra outputs are cropped), then gather the overlapping 6x6 tiles
    # as (36, tiles * C_in): point-major so each point's GEMM reads one contiguous block.
    pad_h, pad_w = tiles_h * TILE + TAPS - 1 - h, tiles_w * TILE + TAPS - 1 - w
    nhwc = x.permute(0, 2, 3, 1)
    if pad_h or pad_w:
        nhwc = F.pad(nhwc, (0, 0, 0, pad_w, 0, pad_h))
    tiles = n * tiles_h * tiles_w
    d = nhwc.unfold(1, SPAN, TILE).unfold(2, SPAN, TILE)          # (N, th, tw, C_in, 6, 6)
    d = d.permute(4, 5, 0, 1, 2, 3).reshape(SPAN * SPAN, tiles * c_in)
    return (to_tiles @ d).view(SPAN * SPAN, tiles, c_in)


def _torch_output_transform(m: torch.Tensor, bias: torch.Tensor | None, n: int, out_h: int, out_w: int,
                            tiles_h: int, tiles_w: int) -> torch.Tensor:
    """A^T m A + bias for every tile of m (36, tiles, C_out), cropped: (N, C_out, out_h, out_w) channels_last."""
    c_out = m.shape[2]
    _, from_tiles = _Transforms.get(m.dtype, m.device)
    y = (from_tiles @ m.reshape(SPAN * SPAN, -1))                 # A^T m A: (16, tiles * C_out)
    y = y.view(TILE, TILE, n, tiles_h, tiles_w, c_out).permute(2, 3, 0, 4, 1, 5)

    out = torch.empty((n, tiles_h, TILE, tiles_w, TILE, c_out), dtype=m.dtype, device=m.device)
    if bias is None:
        out.copy_(y)
    else:
        torch.add(y, bias, out=out)
    out = out.view(n, tiles_h * TILE, tiles_w * TILE, c_out)
    if tiles_h * TILE != out_h or tiles_w * TILE != out_w:
        out = out[:, :out_h, :out_w].contiguous()   # keep the result dense for the norm kernels
    return out.permute(0, 3, 1, 2)


def winograd_applies(conv: nn.Conv2d, dtype: torch.dtype, min_channels: int) -> bool:
    """Whether a conv is a plain 3x3 stride-1 conv wide enough for the GEMMs to pay, in a supported dtype."""
    return (tuple(conv.kernel_size) == (TAPS, TAPS) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
            and tuple(conv.padding) == (0, 0) and dtype in WINOGRAD_DTYPES
            and min(conv.in_channels, conv.out_channels) >= min_channels)


class WinogradConvNormAct(nn.Module):
    """A ConvNormAct whose 3x3 conv runs as `winograd_conv2d` (same pad, norm and activation)."""

    def __init__(self, block: ConvNormAct):
        super().__init__()
        self.padding = block.padding
        self.activation = block.activation
        self.norm = block.norm
        conv = block.conv
        self.register_buffer("weight", winograd_weight(conv.weight))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = winograd_conv2d(x, self.weight, self.bias, pad=self.padding)   # the reflect pad is fused on the CPU
        return self.norm(y, self.activation, residual)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, F(4x4, 3x3), padding={self.padding}"


def use_winograd(module: nn.Module, min_channels: int | None = None) -> int:
    """Replace every eligible 3x3 ConvNormAct inside `module` by a WinogradConvNormAct; returns how many.

    Call on float32 / float64 weights (the transformed kernels are computed from them). min_channels
    defaults to MIN_CHANNELS.
    """
    min_channels = MIN_CHANNELS if min_channels is None else min_channels
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNormAct) and winograd_applies(child.conv, child.conv.weight.dtype, min_channels):
                setattr(parent, name, WinogradConvNormAct(child))
                replaced += 1
    return replaced
