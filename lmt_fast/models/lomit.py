"""The LOMIT generator and discriminator (reference/lomit.md §2-3).

The generator is used through stateless pieces, so that an exemplar can be encoded once and reused:

    c = encode_content(x)                       content code, (N, content_dim, H/4, W/4)
    a = attention(c)                            co-segmentation channel attention of an image
    m = mask_from(c_self, a_other)              soft mask of one image, conditioned on the other one
    s = encode_style(x, m, "foreground")        style code of the masked image, (N, style_dim)
    y = decode(c, m, s_fg, s_bg)                highway AdaIN + decoder

No style parameters are ever assigned onto modules: `decode` takes them as arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast import ops
from lmt_fast.models import layers
from lmt_fast.models.config import LOMITConfig
from lmt_fast.models.layers import MLP, ConvNormAct, DownsamplingEncoder, ResidualBlock, critic_trunk, set_backend

count_parameters = layers.count_parameters  # importable from here as before

REGIONS = ("foreground", "background")


class ContentEncoder(DownsamplingEncoder):
    """E_c: conv7x7 -> stride-2 convs -> residual blocks, instance-normalised."""

    def __init__(self, cfg: LOMITConfig):
        norm = "in_running" if cfg.compat == "official" else "in"
        super().__init__(3, cfg.base_dim, cfg.n_downsample, cfg.n_res_blocks // 2, norm)


class StyleEncoder(nn.Module):
    """E_s: strided LReLU convs, global average pool, 1x1 conv to the style code.

    The official code meant separate foreground / background heads but built both from the same layers,
    so they share every weight; the paper's figure shows one E_s too. One encoder serves both regions here.
    """

    def __init__(self, cfg: LOMITConfig):
        super().__init__()
        dim = cfg.base_dim
        layers = [ConvNormAct(3, dim, 7, 1, 3, "none", "lrelu")]
        for _ in range(cfg.n_downsample):
            layers.append(ConvNormAct(dim, dim * 2, 4, 2, 1, "none", "lrelu"))
            dim *= 2
        for _ in range(cfg.style_extra_downsample):
            layers.append(ConvNormAct(dim, dim, 4, 2, 1, "none", "lrelu"))
        self.convs = nn.ModuleList(layers)
        self.out = nn.Conv2d(dim, cfg.style_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.convs:
            x = layer(x)
        return self.out(x.mean(dim=(2, 3), keepdim=True)).flatten(1)


class MaskNetwork(nn.Module):
    """G_m: channel attention from the other image, conv-BN-ReLU stack, 1x1 conv, sigmoid."""

    def __init__(self, cfg: LOMITConfig):
        super().__init__()
        dim = cfg.content_dim
        self.attention_in = nn.Linear(dim, dim * 2)
        self.attention_out = nn.Linear(dim * 2, dim)
        self.convs = nn.ModuleList(ConvNormAct(dim, dim, 3, 1, 1, "bn", "relu") for _ in range(cfg.mask_blocks))
        self.out = ConvNormAct(dim, 1, 1, 1, 0, "none", "sigmoid")

    def attention(self, c: torch.Tensor) -> torch.Tensor:
        """a = sigmoid(W2 tanh(W1 GAP(c))), shape (N, C, 1, 1)."""
        hidden = torch.tanh(self.attention_in(c.mean(dim=(2, 3))))
        return torch.sigmoid(self.attention_out(hidden))[:, :, None, None]

    def forward(self, c_self: torch.Tensor, attention_other: torch.Tensor) -> torch.Tensor:
        x = c_self * attention_other
        for layer in self.convs:
            x = layer(x)
        return self.out(x)


class Decoder(nn.Module):
    """HAdaIN once on the content code, then LN residual blocks, upsampling convs and a tanh output."""

    def __init__(self, cfg: LOMITConfig):
        super().__init__()
        dim = cfg.content_dim
        self.compat = cfg.compat
        self.backend = "auto"
        self.mlp_fg = MLP(cfg.style_dim, dim * 2, cfg.mlp_dim, cfg.mlp_blocks)
        self.mlp_bg = MLP(cfg.style_dim, dim * 2, cfg.mlp_dim, cfg.mlp_blocks)
        self.blocks = nn.ModuleList(ResidualBlock(dim, "ln") for _ in range(cfg.n_res_blocks // 2))
        self.up = nn.ModuleList()
        for _ in range(cfg.n_downsample):
            self.up.append(ConvNormAct(dim, dim // 2, 5, 1, 2, "ln", "relu"))
            dim //= 2
        self.out = ConvNormAct(dim, 3, 7, 1, 3, "none", "tanh")

    def style_affine(self, s: torch.Tensor, region: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) of shape (N, C): the MLP regresses a mean and a log-variance."""
        mlp = self.mlp_fg if region == "foreground" else self.mlp_bg
        beta, log_var = mlp(s).chunk(2, dim=1)
        return torch.exp(0.5 * log_var), beta

    def forward(self, c: torch.Tensor, m: torch.Tensor, s_fg: torch.Tensor, s_bg: torch.Tensor) -> torch.Tensor:
        gamma_f, beta_f = self.style_affine(s_fg, "foreground")
        gamma_b, beta_b = self.style_affine(s_bg, "background")
        if self.compat == "official":
            x = official_highway_adain(c, m, gamma_f, beta_f, gamma_b, beta_b)
        else:
            x = ops.highway_adain(c, m, gamma_f, beta_f, gamma_b, beta_b, backend=self.backend)
        for block in self.blocks:
            x = block(x)
        for layer in self.up:
            x = layer(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x)


def official_highway_adain(c, m, gamma_f, beta_f, gamma_b, beta_b, eps: float = 1e-5):
    """HAdaIN exactly as the official code computes it (compat="official").

    Differs from the paper in the content std: the unbiased std over rows of the unbiased per-row stds,
    with eps added to the std rather than to the variance.
    """
    mean = c.mean(dim=(2, 3), keepdim=True)
    std = c.std(dim=3).std(dim=2)[:, :, None, None]
    normalised = (c - mean) / (std + eps)
    m = _resize_mask(m, c.shape[-2:])
    fg = gamma_f[:, :, None, None] * normalised + beta_f[:, :, None, None]
    bg = gamma_b[:, :, None, None] * normalised + beta_b[:, :, None, None]
    return m * fg + (1 - m) * bg


def _resize_mask(m: torch.Tensor, size) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)


@dataclass
class ExemplarCode:
    """What the generator needs of an exemplar, computed once (see `LOMITGenerator.encode_exemplar`).

    mask is the exemplar's foreground mask at content resolution; style_fg its foreground style code.
    """

    content: torch.Tensor
    attention: torch.Tensor
    mask: torch.Tensor
    style_fg: torch.Tensor

    def to(self, *args, **kwargs) -> "ExemplarCode":
        return ExemplarCode(*(t.to(*args, **kwargs) for t in (self.content, self.attention, self.mask, self.style_fg)))

    def __len__(self) -> int:
        return self.content.shape[0]

    def expand(self, n: int) -> "ExemplarCode":
        """Repeat a single exemplar for a batch of n inputs."""
        if len(self) == n:
            return self
        if len(self) != 1:
            raise ValueError(f"an exemplar batch of {len(self)} cannot serve {n} inputs (need 1 or {n})")
        return ExemplarCode(*(t.expand(n, *t.shape[1:]) for t in (self.content, self.attention, self.mask, self.style_fg)))


@dataclass
class GeneratorOutput:
    image: torch.Tensor          # (N, 3, H, W) in [-1, 1]
    input_mask: torch.Tensor     # (N, 1, H/4, W/4) in [0, 1]
    exemplar_mask: torch.Tensor  # (N, 1, H/4, W/4) in [0, 1]


@dataclass
class PairedExemplar:
    """What the paired forward computes from the exemplar alone (what a translator's exemplar cache keeps).

    The paired forward conditions the exemplar's mask on the input (Mask(c_ex, a_in)), so its mask and
    its style depend on each input; its content code and channel attention do not. With a given
    exemplar mask, the mask and the foreground style are input-independent too and are kept.
    """

    image: torch.Tensor                # x_ex: the style encoder reads it when the mask depends on the input
    content: torch.Tensor              # c_ex
    attention: torch.Tensor            # a_ex
    mask: Optional[torch.Tensor]       # the given exemplar mask at content resolution, else None
    style_fg: Optional[torch.Tensor]   # its foreground style code when the mask is given, else None

    def tensors(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def expand(self, n: int) -> "PairedExemplar":
        """Repeat a single exemplar for a batch of n inputs."""
        size = self.content.shape[0]
        if size == n:
            return self
        if size != 1:
            raise ValueError(f"an exemplar batch of {size} cannot serve {n} inputs (need 1 or {n})")
        return PairedExemplar(*(None if t is None else t.expand(n, *t.shape[1:]) for t in self.tensors()))


class LOMITGenerator(nn.Module):
    def __init__(self, cfg: LOMITConfig):
        super().__init__()
        self.config = cfg
        self.content_encoder = ContentEncoder(cfg)
        self.style_encoder = StyleEncoder(cfg)
        # The global baseline has no mask network at all (no unused parameters for DDP to trip on).
        self.mask_net = MaskNetwork(cfg) if cfg.mask_mode == "learned" else None
        self.decoder = Decoder(cfg)

    # -- stateless pieces --------------------------------------------------------------------------
    def encode_content(self, x: torch.Tensor) -> torch.Tensor:
        return self.content_encoder(x)

    def attention(self, c: torch.Tensor) -> torch.Tensor:
        if self.mask_net is None:
            return c.new_ones(c.shape[0], c.shape[1], 1, 1)
        return self.mask_net.attention(c)

    def mask_from(self, c_self: torch.Tensor, attention_other: torch.Tensor) -> torch.Tensor:
        if self.mask_net is None:
            return c_self.new_ones(c_self.shape[0], 1, *c_self.shape[2:])
        return self.mask_net(c_self, attention_other)

    def compute_mask(self, c_self: torch.Tensor, c_other: torch.Tensor) -> torch.Tensor:
        """m_self = Mask(c_self, c_other): a mask conditioned on the other image (co-segmentation)."""
        return self.mask_from(c_self, self.attention(c_other))

    def encode_style(self, x: torch.Tensor, m: torch.Tensor, region: str) -> torch.Tensor:
        """Style code of x ⊙ up(m) (foreground) or x ⊙ up(1 - m) (background); up = bilinear."""
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        weight = _resize_mask(m, x.shape[-2:])
        if region == "background":
            weight = 1 - weight
        return self.style_encoder(x * weight)

    def decode(self, c, m, s_fg, s_bg) -> torch.Tensor:
        return self.decoder(c, m, s_fg, s_bg)

    # -- inference ---------------------------------------------------------------------------------
    def forward(self, x_in: torch.Tensor, x_ex: torch.Tensor, input_mask: torch.Tensor | None = None,
                exemplar_mask: torch.Tensor | None = None) -> GeneratorOutput:
        """Translate x_in with the foreground style of x_ex (the paper's x_1->2).

        Each image's mask is conditioned on the other image, as in the paper and the official code.
        A given mask replaces the learned one (user intervention); masks may be at image or content
        resolution.
        """
        return self.paired_forward(x_in, x_ex, input_mask, exemplar_mask)[0]

    def paired_forward(self, x_in: torch.Tensor, x_ex: torch.Tensor, input_mask: torch.Tensor | None = None,
                       exemplar_mask: torch.Tensor | None = None) -> tuple[GeneratorOutput, PairedExemplar]:
        """`forward`, and the exemplar's input-independent part for `paired_forward_cached`."""
        n = x_in.shape[0]
        c_in, c_ex = self._twin(self.encode_content, x_in, x_ex)  # both images new: encoders batched together
        a_in, a_ex = self.attention(torch.cat([c_in, c_ex])).split(n)
        out, s_fg = self._paired_tail(x_in, c_in, a_in, x_ex, c_ex, a_ex, input_mask, exemplar_mask, None)
        if exemplar_mask is None:
            return out, PairedExemplar(x_ex, c_ex, a_ex, None, None)
        return out, PairedExemplar(x_ex, c_ex, a_ex, out.exemplar_mask, s_fg)

    def paired_forward_cached(self, x_in: torch.Tensor, exemplar: PairedExemplar,
                              input_mask: torch.Tensor | None = None) -> GeneratorOutput:
        """The paired forward of x_in with an exemplar whose `paired_forward` part was computed before.

        Equal to forward(x_in, x_ex, input_mask, exemplar_mask) up to rounding: the input's encoders now
        run without the exemplar beside them in the batch, which can change the last bits of a conv.
        """
        ex = exemplar.expand(x_in.shape[0])
        c_in = self.encode_content(x_in)
        out, _ = self._paired_tail(x_in, c_in, self.attention(c_in), ex.image, ex.content, ex.attention,
                                   input_mask, ex.mask, ex.style_fg)
        return out

    def _paired_tail(self, x_in, c_in, a_in, x_ex, c_ex, a_ex, m_in, m_ex, s_fg):
        """The paired forward once both images are encoded: masks, styles, decoding.

        s_fg: the exemplar's foreground style when already known (its mask is then given), else None.
        Returns (GeneratorOutput, s_fg).
        """
        n = x_in.shape[0]
        if m_in is None and m_ex is None:
            m_in, m_ex = self._twin(self.mask_from, c_in, c_ex, a_ex, a_in)
        elif m_in is None:
            m_in = self.mask_from(c_in, a_ex)
        elif m_ex is None:
            m_ex = self.mask_from(c_ex, a_in)
        m_in = _resize_mask(m_in, c_in.shape[-2:])
        m_ex = _resize_mask(m_ex, c_ex.shape[-2:])
        background = x_in * (1 - _resize_mask(m_in, x_in.shape[-2:]))
        if s_fg is None:  # both style codes in one batched pass
            s_bg, s_fg = self.style_encoder(torch.cat([background, x_ex * _resize_mask(m_ex, x_ex.shape[-2:])])).split(n)
        else:
            s_bg = self.style_encoder(background)
        return GeneratorOutput(self.decode(c_in, m_in, s_fg, s_bg), m_in, m_ex), s_fg

    def encode_exemplar(self, x_ex: torch.Tensor, exemplar_mask: torch.Tensor | None = None) -> ExemplarCode:
        """Encode an exemplar once, for any number of inputs.

        Without a given mask, the exemplar's mask is conditioned on the exemplar itself (Mask(c, c), the
        self-reconstruction path of training), because the paired mask Mask(c_ex, c_in) would depend on
        each input. `forward` keeps the paired form.
        """
        c = self.encode_content(x_ex)
        a = self.attention(c)
        m = self.mask_from(c, a) if exemplar_mask is None else _resize_mask(exemplar_mask, c.shape[-2:])
        return ExemplarCode(c, a, m, self.encode_style(x_ex, m, "foreground"))

    def translate_encoded(self, x_in: torch.Tensor, exemplar: ExemplarCode,
                          input_mask: torch.Tensor | None = None) -> GeneratorOutput:
        """Translate x_in with an exemplar encoded by `encode_exemplar`."""
        exemplar = exemplar.expand(x_in.shape[0])
        c = self.encode_content(x_in)
        m = self.mask_from(c, exemplar.attention) if input_mask is None else _resize_mask(input_mask, c.shape[-2:])
        s_bg = self.encode_style(x_in, m, "background")
        return GeneratorOutput(self.decode(c, m, exemplar.style_fg, s_bg), m, exemplar.mask)

    def set_backend(self, backend: str) -> None:
        set_backend(self, backend)
        self.decoder.backend = backend

    def _twin(self, fn, a, b, *extra):
        """Run fn on the input and exemplar halves together where batch statistics allow it.

        Batching is exact at inference; in training the mask network's BatchNorm would see both halves
        at once, so the halves run separately there (as in the official code).
        """
        n = a.shape[0]
        if self.training:
            if extra:
                return fn(a, extra[0]), fn(b, extra[1])
            return fn(a), fn(b)
        if extra:
            return fn(torch.cat([a, b]), torch.cat(list(extra))).split(n)
        return fn(torch.cat([a, b])).split(n)


class LOMITDiscriminator(nn.Module):
    """StarGAN-style critic + attribute classifier sharing one trunk (reference/lomit.md §3)."""

    def __init__(self, cfg: LOMITConfig):
        super().__init__()
        self.trunk, dim = critic_trunk(cfg.d_base_dim, cfg.d_layers)
        self.src = ConvNormAct(dim, 1, 3, 1, 1, "none", "none")
        self.cls = nn.Conv2d(dim, cfg.num_attributes, cfg.image_size // 2 ** cfg.d_layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (patch critic scores (N,1,h,w), attribute logits (N, num_attributes))."""
        for layer in self.trunk:
            x = layer(x)
        return self.src(x), self.cls(x).flatten(1)
