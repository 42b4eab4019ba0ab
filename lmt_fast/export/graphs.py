"""The modules that are exported: one per graph of the contract (lmt_fast.export.contract).

Each wraps a LOMITGenerator and computes exactly what its method computes, from the generator's
stateless pieces, with the contract's tensors in and out (and the uint8 conversions when io="uint8"):

    full           LOMITGenerator.forward
    style_encoder  LOMITGenerator.encode_exemplar
    translate      LOMITGenerator.translate_encoded

``forward`` itself is not traced: it splits its batched twin encoders with ``Tensor.split(n)``, which
makes torch.export specialise the batch size. Here the twins are batched the same way and separated by
slicing, which keeps the batch dynamic.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast.export.contract import IOContract

_F32 = torch.float32


# -- uint8 conversions (the contract's formulas, in float32) -----------------------------------------
# uint8 tensors are only cast: TensorRT takes UINT8 at the network's inputs and outputs and nowhere
# else, so the layout change happens on the float side.

def image_from_uint8(u: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float32 in [-1, 1]: u / 127.5 - 1."""
    return u.to(_F32).permute(0, 3, 1, 2) / 127.5 - 1.0


def mask_from_uint8(u: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 1) uint8 -> (N, 1, H, W) float32 in [0, 1]: u / 255."""
    return u.to(_F32).permute(0, 3, 1, 2) / 255.0


def image_to_uint8(y: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> (N, H, W, 3) uint8: round((clip(y, -1, 1) + 1) * 127.5)."""
    u = torch.round((y.to(_F32).clamp(-1.0, 1.0) + 1.0) * 127.5)
    return u.clamp(0.0, 255.0).permute(0, 2, 3, 1).to(torch.uint8)


def mask_to_uint8(m: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) float in [0, 1] -> (N, h, w, 1) uint8: round(clip(m, 0, 1) * 255)."""
    return torch.round(m.to(_F32).clamp(0.0, 1.0) * 255.0).permute(0, 2, 3, 1).to(torch.uint8)


class ExportGraph(nn.Module):
    """Base: converts the contract's inputs to the model's, and the model's outputs to the contract's."""

    def __init__(self, generator: nn.Module, contract: IOContract):
        super().__init__()
        self.generator = generator
        self.uint8 = contract.variant.io == "uint8"
        self.dtype = torch.float16 if contract.variant.dtype == "float16" else torch.float32
        self.input_names = contract.input_names

    def forward(self, *tensors: torch.Tensor):
        named = dict(zip(self.input_names, tensors))
        return self.compute(named)

    def compute(self, named: dict) -> tuple:
        raise NotImplementedError

    # -- conversions -------------------------------------------------------------------------------
    def image_in(self, x: torch.Tensor) -> torch.Tensor:
        return image_from_uint8(x).to(self.dtype) if self.uint8 else x

    def mask_in(self, m: torch.Tensor | None, content: torch.Tensor) -> torch.Tensor | None:
        """A given mask of any size -> content resolution (bilinear, align_corners=False), like
        LOMITGenerator.forward; at content resolution already, the resize is the identity."""
        if m is None:
            return None
        if self.uint8:
            m = mask_from_uint8(m).to(self.dtype)
        return F.interpolate(m, size=content.shape[-2:], mode="bilinear", align_corners=False)

    def image_out(self, y: torch.Tensor) -> torch.Tensor:
        return image_to_uint8(y) if self.uint8 else y

    def mask_out(self, m: torch.Tensor) -> torch.Tensor:
        return mask_to_uint8(m) if self.uint8 else m


class FullGraph(ExportGraph):
    """LOMITGenerator.forward: each image's mask conditioned on the other image."""

    def compute(self, named):
        g = self.generator
        x_in, x_ex = self.image_in(named["input"]), self.image_in(named["exemplar"])
        n = x_in.shape[0]
        c = g.encode_content(torch.cat([x_in, x_ex]))
        a = g.attention(c)
        c_in, c_ex, a_in, a_ex = c[:n], c[n:], a[:n], a[n:]
        m_in, m_ex = self.mask_in(named.get("input_mask_in"), c_in), self.mask_in(named.get("exemplar_mask_in"), c_ex)
        if m_in is None and m_ex is None:
            m = g.mask_from(c, torch.cat([a_ex, a_in]))
            m_in, m_ex = m[:n], m[n:]
        elif m_in is None:
            m_in = g.mask_from(c_in, a_ex)
        elif m_ex is None:
            m_ex = g.mask_from(c_ex, a_in)
        up_in = F.interpolate(m_in, size=x_in.shape[-2:], mode="bilinear", align_corners=False)
        up_ex = F.interpolate(m_ex, size=x_ex.shape[-2:], mode="bilinear", align_corners=False)
        s = g.style_encoder(torch.cat([x_in * (1 - up_in), x_ex * up_ex]))
        s_bg, s_fg = s[:n], s[n:]
        image = g.decode(c_in, m_in, s_fg, s_bg)
        return self.image_out(image), self.mask_out(m_in), self.mask_out(m_ex)


class StyleEncoderGraph(ExportGraph):
    """LOMITGenerator.encode_exemplar: attention, mask (conditioned on the exemplar itself) and style."""

    def compute(self, named):
        g = self.generator
        x = self.image_in(named["exemplar"])
        c = g.encode_content(x)
        a = g.attention(c)
        m = self.mask_in(named.get("exemplar_mask_in"), c)
        if m is None:
            m = g.mask_from(c, a)
        style = g.encode_style(x, m, "foreground")
        return a, self.mask_out(m), style


class TranslateGraph(ExportGraph):
    """LOMITGenerator.translate_encoded with the exemplar's attention and style code as inputs."""

    def compute(self, named):
        g = self.generator
        x = self.image_in(named["input"])
        c = g.encode_content(x)
        m = self.mask_in(named.get("input_mask_in"), c)
        if m is None:
            m = g.mask_from(c, named["exemplar_attention"])
        s_bg = g.encode_style(x, m, "background")
        image = g.decode(c, m, named["exemplar_style"], s_bg)
        return self.image_out(image), self.mask_out(m)


GRAPHS = {"full": FullGraph, "style_encoder": StyleEncoderGraph, "translate": TranslateGraph}


def graph_module(generator: nn.Module, contract: IOContract) -> ExportGraph:
    return GRAPHS[contract.variant.part](generator, contract).eval()
