"""Building blocks of the LOMIT networks.

Every normalisation goes through `lmt_fast.ops`, so that a faster backend (fused CPU/CUDA/Triton kernels)
speeds up the whole model without touching it. The backend is a plain attribute (`layer.backend`) set for
the whole model by `set_backend`; it is configuration, not state.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmt_fast import ops

NORMS = ("in", "in_running", "ln", "bn", "none")
ACTIVATIONS = ("relu", "lrelu", "tanh", "sigmoid", "none")
LRELU_SLOPE = 0.01

# Activations that the op family can fuse into a normalisation pass.
_FUSABLE = {"relu": "relu", "lrelu": "lrelu", "none": None}


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "lrelu":
        return F.leaky_relu(x, LRELU_SLOPE)
    if activation == "tanh":
        return torch.tanh(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "none":
        return x
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


class Norm(nn.Module):
    """Normalisation with optional fused activation and residual add.

    kinds:
        "in"          instance norm with affine, per-instance statistics (the paper)
        "in_running"  instance norm with affine and running statistics used in eval mode (official code,
                      `InstanceNorm2d(affine=True, track_running_stats=True)`)
        "ln"          LayerNorm as GroupNorm(1, C) with per-channel affine (official "ln")
        "bn"          BatchNorm2d
        "none"        identity
    """

    def __init__(self, kind: str, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
        self.kind = kind
        self.eps = eps
        self.momentum = momentum
        self.backend = "auto"
        if kind != "none":
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        if kind in ("in_running", "bn"):
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor, activation: str = "none",
                residual: torch.Tensor | None = None) -> torch.Tensor:
        fused = _FUSABLE.get(activation, "unfused")
        if self.kind in ("in", "ln") and fused != "unfused":
            op = ops.instance_norm if self.kind == "in" else ops.layer_norm
            return op(x, self.weight, self.bias, eps=self.eps, activation=fused, residual=residual,
                      backend=self.backend)
        y = self._normalise(x)
        y = activate(y, activation)
        return y if residual is None else y + residual

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        if self.kind == "in":
            return ops.instance_norm(x, self.weight, self.bias, eps=self.eps, backend=self.backend)
        if self.kind == "ln":
            return ops.layer_norm(x, self.weight, self.bias, eps=self.eps, backend=self.backend)
        if self.kind == "bn":
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self._tracking(), self.momentum, self.eps)
        # in_running: per-instance statistics while training (updating the running ones), running at eval
        return F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                               use_input_stats=self._tracking(), momentum=self.momentum, eps=self.eps)

    def _tracking(self) -> bool:
        if self.training:
            self.num_batches_tracked.add_(1)
        return self.training

    def extra_repr(self) -> str:
        return f"{self.kind}, eps={self.eps}"


class ConvNormAct(nn.Module):
    """Reflection pad -> conv (with bias) -> norm -> activation, the official `ConvBlock`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, norm: str = "none", activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        self.padding = padding
        self.activation = activation
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.norm = Norm(norm, out_channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4, mode="reflect")
        return self.norm(self.conv(x), self.activation, residual)


class ResidualBlock(nn.Module):
    """x + [conv3x3-norm-ReLU -> conv3x3-norm]; the add is fused into the second norm."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, 1, 1, norm, "relu")
        self.conv2 = ConvNormAct(channels, channels, 3, 1, 1, norm, "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x), residual=x)


class DownsamplingEncoder(nn.Module):
    """conv7x7 stem -> `n_downsample` stride-2 convs (doubling the channels) -> residual blocks, all with the
    one `norm` and ReLU: the official content encoder, which MGST's encoder repeats."""

    def __init__(self, in_channels: int, base_dim: int, n_downsample: int, n_blocks: int, norm: str):
        super().__init__()
        dim = base_dim
        self.stem = ConvNormAct(in_channels, dim, 7, 1, 3, norm, "relu")
        self.down = nn.ModuleList()
        for _ in range(n_downsample):
            self.down.append(ConvNormAct(dim, dim * 2, 4, 2, 1, norm, "relu"))
            dim *= 2
        self.blocks = nn.ModuleList(ResidualBlock(dim, norm) for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.down:
            x = layer(x)
        for block in self.blocks:
            x = block(x)
        return x


class MLP(nn.Module):
    """Linear-LReLU stack (no norm) ending in a plain linear layer."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, hidden_blocks: int,
                 activation: str = "lrelu"):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (hidden_blocks + 1)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], out_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = activate(layer(x), self.activation)
        return self.out(x)


def critic_trunk(base_dim: int, n_layers: int) -> tuple[nn.ModuleList, int]:
    """The discriminators' shared trunk: `n_layers` stride-2 4x4 convs with LReLU and no norm, doubling the
    channels after the first. Returns the layers and the channels of their output."""
    dim = base_dim
    layers = [ConvNormAct(3, dim, 4, 2, 1, "none", "lrelu")]
    for _ in range(n_layers - 1):
        layers.append(ConvNormAct(dim, dim * 2, 4, 2, 1, "none", "lrelu"))
        dim *= 2
    return nn.ModuleList(layers), dim


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def set_backend(module: nn.Module, backend: str) -> None:
    """Route every normalisation inside `module` through the named op backend."""
    for layer in module.modules():
        if isinstance(layer, Norm):
            layer.backend = backend
