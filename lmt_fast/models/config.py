"""Model configuration: every size of the LOMIT networks is a config value.

`LOMITConfig.paper()` is the 128x128 model of the paper and the official code (18,120,588 generator
parameters); `LOMITConfig.tiny()` is small enough to train and test on a CPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

COMPAT_MODES = ("paper", "official")
MASK_MODES = ("learned", "global")

# The attribute selection of the official CelebA configuration (hair colour and smile).
DEFAULT_ATTRIBUTES = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Smiling")


@dataclass(frozen=True)
class LOMITConfig:
    """Sizes and behaviour switches of the LOMIT generator and discriminator.

    compat:
        "paper"    HAdaIN normalises with the true spatial std (sqrt(var + eps)); the content encoder's
                   instance norm always uses per-instance statistics. The default.
        "official" reproduces the official code where it differs from the paper: the content std is the
                   (unbiased) std over rows of the per-row stds, eps is added to that std, and the content
                   encoder's instance norms keep running statistics that replace the per-instance ones
                   in eval mode.
    mask_mode:
        "learned"  LOMIT: the co-segmentation network decides where the exemplar's style goes.
        "global"   the baseline of the quality benchmark: no mask network, every mask is 1, so the
                   exemplar's whole-image style restyles the whole input (MUNIT-style global AdaIN).
    """

    image_size: int = 128          # the training resolution; the generator itself is fully convolutional
    base_dim: int = 64             # channels of the first conv (official FIRST_DIM)
    n_downsample: int = 2          # stride-2 convs of the content encoder; masks live at image_size / 2**n
    n_res_blocks: int = 8          # residual blocks in all: half in the content encoder, half in the decoder
    style_dim: int = 8             # length of a style code
    style_extra_downsample: int = 2  # stride-2 convs of the style encoder beyond the shared ones
    mlp_dim: int = 256             # hidden width of MLP_f / MLP_b
    mlp_blocks: int = 1            # hidden layers of the MLPs beyond the first
    mask_blocks: int = 6           # conv-BN-ReLU layers of the mask network
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    d_base_dim: int = 64           # discriminator: channels of the first conv
    d_layers: int = 6              # discriminator: stride-2 convs (official D.N_RES_BLOCKS)
    compat: str = "paper"
    mask_mode: str = "learned"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # free-form notes kept in checkpoints

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))
        if self.compat not in COMPAT_MODES:
            raise ValueError(f"compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        for name in ("image_size", "base_dim", "style_dim", "mlp_dim", "d_base_dim", "d_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_downsample", "style_extra_downsample", "mlp_blocks", "mask_blocks"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_res_blocks < 0 or self.n_res_blocks % 2:
            raise ValueError(f"n_res_blocks must be even and >= 0 (half per encoder/decoder), got {self.n_res_blocks}")
        if not self.attributes:
            raise ValueError("attributes must name at least one attribute")
        if self.image_size % self.size_multiple:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {self.size_multiple}")
        if self.image_size % (2 ** self.d_layers) or self.image_size // 2 ** self.d_layers < 2:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of 2**d_layers = {2 ** self.d_layers} and at "
                "least twice it (the discriminator's heads run on its final map, which must be >= 2x2)"
            )

    # -- derived sizes ---------------------------------------------------------------------------
    @property
    def content_dim(self) -> int:
        return self.base_dim * 2 ** self.n_downsample

    @property
    def mask_scale(self) -> int:
        """Image pixels per mask pixel along each side."""
        return 2 ** self.n_downsample

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (every stride-2 conv of both encoders halves exactly)."""
        return 2 ** (self.n_downsample + self.style_extra_downsample)

    @property
    def num_attributes(self) -> int:
        return len(self.attributes)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "LOMITConfig":
        """The 128x128 model of the paper / official code (config_celebA.yaml)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "LOMITConfig":
        """A small model for CPU training and tests (64x64, 32-channel content code)."""
        values = dict(image_size=64, base_dim=8, n_res_blocks=4, style_dim=8, mlp_dim=32,
                      mask_blocks=2, d_base_dim=16, d_layers=5)
        values.update(overrides)
        return cls(**values)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["attributes"] = list(self.attributes)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LOMITConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LOMITConfig fields: {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "LOMITConfig":
        return dataclasses.replace(self, **changes)
