"""MGST: mask-guided style transfer for purifying real eye images (reference/mgst.md §2.3, §6).

A feed-forward generator takes an RGB image and its attention mask (iris + pupil) as a 4-channel input,
encodes it, renormalises the bottleneck features region by region with ``lmt_fast.ops.region_adain(...,
stats="region")`` and decodes the purified image::

    h = E(concat[x, 2m - 1])                      content features, (N, C, H/4, W/4), instance-normalised
    M = [m, 1 - m] area-pooled to h's size       K = 2 regions: attention, background
    h' = region_adain(h, M, gamma, beta, "region")   each region normalised by its own masked moments,
                                                      then given the style's (gamma_k, beta_k)
    y = D(h')                                     LayerNorm residual blocks, upsampling convs, tanh

The per-region style (gamma_k, beta_k), each (N, K, C), comes from one of two places:

* a style image: ``style_from_image(x_s, m_s)`` = masked moments of E(x_s) under the style image's own
  regions (gamma = sqrt(var + eps), beta = mean), AdaIN-style (reference/mgst.md §6.3 (b));
* the stored style: the average of those statistics over synthetic training images, kept in the
  checkpoint as the buffers ``style_mean`` / ``style_std`` (§6.3 (c)), so deployment needs no style image.

``mask_mode="global"`` is the baseline without regions: the mask is forced to all ones everywhere (input
channel and renormalisation), so region_adain sees one full region and one empty one, i.e. plain AdaIN.

Like the LOMIT modules, every normalisation goes through ``lmt_fast.ops`` with a ``backend`` attribute
(`set_backend`), so the fused CPU/CUDA/Triton kernels and the ONNX lowering serve this model unchanged.

Checkpoints use lmt_fast's format (lmt_fast.io: safetensors + JSON header, atomic writes) with
``"model": "mgst"``; `save_mgst_checkpoint` / `load_mgst_checkpoint` read and write them.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast import ops
from lmt_fast.models import layers
from lmt_fast.models.layers import ConvNormAct, DownsamplingEncoder, ResidualBlock, critic_trunk, set_backend

count_parameters = layers.count_parameters  # importable from here as before

REGIONS = ("attention", "background")
MASK_MODES = ("regions", "global")
MODEL_KIND = "mgst"


@dataclass(frozen=True)
class MGSTConfig:
    """Sizes and switches of the MGST generator and its discriminator.

    image_height / image_width: the training size (the generator is fully convolutional; any size whose
        sides are multiples of `size_multiple` runs). Default 36x60, the MPIIGaze normalised eye patch.
    base_dim: channels of the first conv; doubled by each of the `n_downsample` stride-2 convs.
    encoder_blocks / decoder_blocks: instance-norm residual blocks before the region AdaIN, LayerNorm ones
        after it (LayerNorm keeps the per-channel statistics the AdaIN set; instance norm would erase them).
    mask_mode: "regions" (MGST) or "global" (the baseline: mask forced to all ones, no regions).
    style_eps: eps of the masked moments and of the renormalisation.
    d_base_dim / d_layers: the PatchGAN discriminator used in training (stride-2 convs).
    """

    image_height: int = 36
    image_width: int = 60
    base_dim: int = 16
    n_downsample: int = 2
    encoder_blocks: int = 2
    decoder_blocks: int = 2
    mask_mode: str = "regions"
    style_eps: float = 1e-5
    d_base_dim: int = 16
    d_layers: int = 3
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        for name in ("image_height", "image_width", "base_dim", "d_base_dim", "d_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_downsample", "encoder_blocks", "decoder_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.style_eps > 0):
            raise ValueError(f"style_eps must be > 0, got {self.style_eps}")
        k = self.size_multiple
        if self.image_height % k or self.image_width % k:
            raise ValueError(f"image size {self.image_height}x{self.image_width} (HxW) must have sides that are "
                             f"multiples of {k} (2**n_downsample)")

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def content_dim(self) -> int:
        return self.base_dim * 2 ** self.n_downsample

    @property
    def size_multiple(self) -> int:
        return 2 ** self.n_downsample

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of training."""
        return (self.image_height, self.image_width)

    @property
    def num_regions(self) -> int:
        return len(REGIONS)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def small(cls, **overrides: Any) -> "MGSTConfig":
        """The CPU-trainable model shipped in lmt_fast/assets/mgst (36x60, 64-channel bottleneck)."""
        return cls(**overrides)

    @classmethod
    def johnson(cls, **overrides: Any) -> "MGSTConfig":
        """The Johnson-style transformation net of reference/mgst.md §2.3 (c7s1-32, d64, d128, 5 residual
        blocks of 128 channels, u64, u32, c7s1-3), with the region AdaIN after the second block."""
        values = dict(base_dim=32, encoder_blocks=2, decoder_blocks=3, d_base_dim=64, d_layers=3)
        values.update(overrides)
        return cls(**values)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MGSTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MGSTConfig fields: {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "MGSTConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class MGSTStyle:
    """Per-region style statistics: gamma (scale = std) and beta (shift = mean), each (N, K, C)."""

    gamma: torch.Tensor
    beta: torch.Tensor

    def __len__(self) -> int:
        return self.gamma.shape[0]

    def to(self, *args, **kwargs) -> "MGSTStyle":
        return MGSTStyle(self.gamma.to(*args, **kwargs), self.beta.to(*args, **kwargs))

    def expand(self, n: int) -> "MGSTStyle":
        """Repeat a single style for a batch of n images."""
        have = self.gamma.shape[0]  # not len(): that would pin a symbolic batch size while exporting
        if have == n:
            return self
        if have != 1:
            raise ValueError(f"a style batch of {have} cannot serve {n} images (need 1 or {n})")
        return MGSTStyle(self.gamma.expand(n, *self.gamma.shape[1:]), self.beta.expand(n, *self.beta.shape[1:]))

    def with_region(self, region: int, other: "MGSTStyle") -> "MGSTStyle":
        """This style with region `region`'s statistics taken from `other`."""
        gamma, beta = self.gamma.clone(), self.beta.clone()
        gamma[:, region] = other.gamma[:, region]
        beta[:, region] = other.beta[:, region]
        return MGSTStyle(gamma, beta)

    @staticmethod
    def average(styles: "MGSTStyle") -> "MGSTStyle":
        """The mean style of a batch (1, K, C): what the stored "synthetic domain" style is."""
        return MGSTStyle(styles.gamma.float().mean(0, keepdim=True), styles.beta.float().mean(0, keepdim=True))


class MGSTEncoder(DownsamplingEncoder):
    """concat[x, 2m - 1] -> c7s1 -> stride-2 convs -> residual blocks, all instance-normalised."""

    def __init__(self, cfg: MGSTConfig):
        super().__init__(4, cfg.base_dim, cfg.n_downsample, cfg.encoder_blocks, "in")


class MGSTDecoder(nn.Module):
    """LayerNorm residual blocks, then [nearest x2 + conv5x5 (LN, ReLU)] per downsampling, conv7x7 + tanh."""

    def __init__(self, cfg: MGSTConfig):
        super().__init__()
        dim = cfg.content_dim
        self.blocks = nn.ModuleList(ResidualBlock(dim, "ln") for _ in range(cfg.decoder_blocks))
        self.up = nn.ModuleList()
        for _ in range(cfg.n_downsample):
            self.up.append(ConvNormAct(dim, dim // 2, 5, 1, 2, "ln", "relu"))
            dim //= 2
        self.out = ConvNormAct(dim, 3, 7, 1, 3, "none", "tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        for layer in self.up:
            x = layer(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.out(x)


class MGSTGenerator(nn.Module):
    """The purification network; `forward(x, m, style=None)` with x in [-1, 1], m in [0, 1].

    Stateless pieces (nothing is ever assigned onto modules at inference):

        h = encode(x, m)                 content features of the RGB-mask pair
        M = feature_masks(m, h)          (N, 2, h, w) region weights at feature resolution
        s = style_from_image(x_s, m_s)   an MGSTStyle from a style image; stored_style(n) the embedded one
        y = decode(h, M, s)              region AdaIN + decoder
    """

    def __init__(self, cfg: MGSTConfig):
        super().__init__()
        self.config = cfg
        self.backend = "auto"
        self.encoder = MGSTEncoder(cfg)
        self.decoder = MGSTDecoder(cfg)
        k, c = cfg.num_regions, cfg.content_dim
        # The stored "synthetic domain" style (buffers: saved in checkpoints, never trained by gradients).
        self.register_buffer("style_mean", torch.zeros(k, c))
        self.register_buffer("style_std", torch.ones(k, c))
        # How many images the stored style averages (0: never calibrated).
        self.register_buffer("style_images", torch.zeros((), dtype=torch.long))

    # -- masks -------------------------------------------------------------------------------------
    def input_mask(self, x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        """The (N, 1, H, W) attention mask the network uses: m itself, or all ones in global mode."""
        if self.config.mask_mode == "global":
            return x.new_ones(x.shape[0], 1, *x.shape[-2:])
        if m is None:
            raise ValueError("this MGST model works on RGB-mask pairs: give the attention mask "
                             "(iris + pupil = 1), shape (N, 1, H, W)")
        if m.dim() != 4 or m.shape[1] != 1 or m.shape[0] != x.shape[0] or m.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"the mask must have shape (N, 1, H, W) = {(x.shape[0], 1, *x.shape[-2:])}, "
                             f"got {tuple(m.shape)}")
        return m.to(x.dtype)

    def region_masks(self, m: torch.Tensor) -> torch.Tensor:
        """[m, 1 - m] (N, 2, H, W); in global mode m is all ones, so the background region is empty."""
        return torch.cat([m, 1 - m], dim=1)

    def feature_masks(self, m: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Region weights at the feature size: area (average) pooling, exact for sizes that divide."""
        masks = self.region_masks(m)
        if tuple(masks.shape[-2:]) != tuple(h.shape[-2:]):
            masks = F.adaptive_avg_pool2d(masks, h.shape[-2:])
        return masks

    # -- pieces ------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, m: torch.Tensor | None = None) -> torch.Tensor:
        m = self.input_mask(x, m)
        return self.encoder(torch.cat([x, m * 2 - 1], dim=1))

    def style_from_image(self, x_s: torch.Tensor, m_s: torch.Tensor | None = None) -> MGSTStyle:
        """Per-region style of a style image: masked moments of its encoder features."""
        m_s = self.input_mask(x_s, m_s)
        h = self.encoder(torch.cat([x_s, m_s * 2 - 1], dim=1))
        return self.style_of_features(h, self.feature_masks(m_s, h))

    def style_of_features(self, h: torch.Tensor, masks: torch.Tensor) -> MGSTStyle:
        eps = self.config.style_eps
        mean, var = ops.masked_moments(h, masks, eps=eps, backend=self.backend)
        return MGSTStyle(torch.sqrt(var + eps), mean)

    def stored_style(self, n: int = 1) -> MGSTStyle:
        return MGSTStyle(self.style_std[None].expand(n, -1, -1), self.style_mean[None].expand(n, -1, -1))

    @torch.no_grad()
    def set_stored_style(self, style: MGSTStyle, images: int) -> None:
        """Store `style` (one style, or a batch that is averaged) as the embedded domain style."""
        mean = style if len(style) == 1 else MGSTStyle.average(style)
        self.style_std.copy_(mean.gamma[0])
        self.style_mean.copy_(mean.beta[0])
        self.style_images.fill_(int(images))

    def decode(self, h: torch.Tensor, masks: torch.Tensor, style: MGSTStyle) -> torch.Tensor:
        style = style.expand(h.shape[0])
        h = ops.region_adain(h, masks, style.gamma, style.beta, stats="region", eps=self.config.style_eps,
                             backend=self.backend)
        return self.decoder(h)

    # -- inference ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, m: torch.Tensor | None = None, style: MGSTStyle | None = None) -> torch.Tensor:
        """Purify x (N, 3, H, W) in [-1, 1] with attention mask m (N, 1, H, W) in [0, 1].

        style: an MGSTStyle (from `style_from_image`, batch 1 or N); None uses the stored domain style.
        """
        m = self.input_mask(x, m)
        h = self.encoder(torch.cat([x, m * 2 - 1], dim=1))
        style = self.stored_style(x.shape[0]) if style is None else style
        return self.decode(h, self.feature_masks(m, h), style)

    def set_backend(self, backend: str) -> None:
        set_backend(self, backend)
        self.backend = backend


class MGSTDiscriminator(nn.Module):
    """PatchGAN critic of "synthetic-looking" images (RGB only, so MGST and the baseline share it)."""

    def __init__(self, cfg: MGSTConfig):
        super().__init__()
        self.trunk, dim = critic_trunk(cfg.d_base_dim, cfg.d_layers)
        self.out = ConvNormAct(dim, 1, 3, 1, 1, "none", "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.trunk:
            x = layer(x)
        return self.out(x)


# -- checkpoints (lmt_fast format, model kind "mgst") ------------------------------------------------

def save_mgst_checkpoint(generator: MGSTGenerator, path: str | os.PathLike,
                         discriminator: nn.Module | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write an MGST checkpoint: the format of lmt_fast.io.save_checkpoint with ``"model": "mgst"``.

    A path ending in ".safetensors" gives one file (the JSON header in its metadata), anything else a
    directory with config.json + model.safetensors. Writes are atomic (temporary names, then renames).
    """
    from lmt_fast.io import write_checkpoint

    return write_checkpoint(path, MODEL_KIND, generator.config.to_dict(),
                            {"generator.": generator, "discriminator.": discriminator}, extra)


def read_mgst_header(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The JSON header of an MGST checkpoint and the path of its weights; every problem is a CheckpointError."""
    from lmt_fast.io import read_header

    return read_header(path, MODEL_KIND)


@dataclass
class MGSTCheckpoint:
    config: MGSTConfig
    generator: MGSTGenerator
    discriminator: MGSTDiscriminator | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def load_mgst_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                         discriminator: bool = False) -> MGSTCheckpoint:
    """Read a checkpoint written by `save_mgst_checkpoint`; the generator comes back in eval mode.

    Keys and shapes are checked and every mismatch is named in one CheckpointError.
    """
    from lmt_fast.io import CheckpointError, load_discriminator, load_state, read_tensors

    header, weights = read_mgst_header(path)
    try:
        config = MGSTConfig.from_dict(header["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid MGST config: {exc}") from None
    tensors = read_tensors(weights, path, ("generator.", "discriminator."))
    generator = MGSTGenerator(config)
    load_state(generator, tensors, "generator.", path)
    disc = None
    if discriminator:
        disc = MGSTDiscriminator(config)
        load_discriminator(disc, tensors, path)
        disc.to(device)
    generator.to(device).eval()
    return MGSTCheckpoint(config, generator, disc, header, Path(path))
