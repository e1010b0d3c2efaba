"""Building blocks: MLP and DCGAN-style convolutional encoders/decoders.

Encoders map a batch of inputs (N, *input_shape) to (N, out_dim); decoders map codes (N, code_dim)
to (N, *output_shape) *pre-activation* outputs (logits for Bernoulli data, means for Gaussian data).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from regae.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def mlp(
    sizes: Sequence[int],
    act: str = "relu",
    *,
    batchnorm: bool = False,
    dropout: float = 0.0,
    out_act: str | None = None,
) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ``act`` between them (none after the last)."""
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigError(f"an MLP needs at least two positive layer sizes, got {list(sizes)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    if out_act is not None:
        layers.append(activation(out_act))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten, then an MLP ``prod(input_shape) -> hidden... -> out_dim``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_dim: int,
        hidden: Sequence[int],
        act: str = "relu",
        *,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.net = mlp([math.prod(input_shape), *hidden, out_dim], act, batchnorm=batchnorm, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """An MLP ``code_dim -> hidden... -> prod(output_shape)``, reshaped to ``output_shape``."""

    def __init__(
        self,
        code_dim: int,
        output_shape: Sequence[int],
        hidden: Sequence[int],
        act: str = "relu",
        *,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([code_dim, *hidden, math.prod(output_shape)], act, batchnorm=batchnorm, dropout=dropout)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.output_shape)


def _downsamplings(size: int) -> int:
    """How many stride-2 halvings keep the feature map even-sized and at least 4 pixels wide."""
    n = 0
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        n += 1
    return n


class ConvEncoder(nn.Module):
    """DCGAN-style: stride-2 4x4 convolutions (channels doubling from ``base``), then a linear head."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_dim: int,
        base: int = 32,
        act: str = "leaky_relu",
        *,
        batchnorm: bool = True,
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"a conv encoder needs (C, H, W) inputs, got shape {tuple(input_shape)}")
        c, h, w = input_shape
        n = min(_downsamplings(h), _downsamplings(w))
        if n == 0:
            raise ConfigError(f"input {h}x{w} is too small or odd for a conv encoder; use architecture=mlp")
        layers: list[nn.Module] = []
        ch = c
        for i in range(n):
            out = base * 2**i
            layers.append(nn.Conv2d(ch, out, 4, 2, 1, bias=not (batchnorm and i > 0)))
            if batchnorm and i > 0:  # DCGAN: no batchnorm on the first layer
                layers.append(nn.BatchNorm2d(out))
            layers.append(activation(act))
            ch = out
        self.features = nn.Sequential(*layers)
        self.feature_shape = (ch, h // 2**n, w // 2**n)
        self.head = nn.Linear(math.prod(self.feature_shape), out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: linear to a small feature map, then stride-2 transposed convs."""

    def __init__(
        self, code_dim: int, output_shape: Sequence[int], base: int = 32, act: str = "relu", *, batchnorm: bool = True
    ):
        super().__init__()
        if len(output_shape) != 3:
            raise ConfigError(f"a conv decoder needs (C, H, W) outputs, got shape {tuple(output_shape)}")
        c, h, w = output_shape
        n = min(_downsamplings(h), _downsamplings(w))
        if n == 0:
            raise ConfigError(f"output {h}x{w} is too small or odd for a conv decoder; use architecture=mlp")
        ch = base * 2 ** (n - 1)
        self.feature_shape = (ch, h // 2**n, w // 2**n)
        self.head = nn.Sequential(nn.Linear(code_dim, math.prod(self.feature_shape)), activation(act))
        layers: list[nn.Module] = []
        for i in reversed(range(n)):
            out = c if i == 0 else base * 2 ** (i - 1)
            layers.append(nn.ConvTranspose2d(ch, out, 4, 2, 1, bias=not (batchnorm and i > 0)))
            if i > 0:
                if batchnorm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(activation(act))
            ch = out
        self.features = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.features(self.head(z).view(z.shape[0], *self.feature_shape))


def build_encoder(
    architecture: str, input_shape: Sequence[int], out_dim: int, hidden: Sequence[int], act: str = "relu"
) -> nn.Module:
    """``architecture`` "mlp" (``hidden`` = layer widths) or "conv" (``hidden[0]`` = base channels)."""
    if architecture == "mlp":
        return MLPEncoder(input_shape, out_dim, hidden, act)
    if architecture == "conv":
        return ConvEncoder(input_shape, out_dim, base=hidden[0] if hidden else 32)
    raise ConfigError(f"unknown architecture {architecture!r}; choose mlp or conv")


def build_decoder(
    architecture: str, code_dim: int, output_shape: Sequence[int], hidden: Sequence[int], act: str = "relu"
) -> nn.Module:
    """The decoder matching :func:`build_encoder` (MLP widths are reversed)."""
    if architecture == "mlp":
        return MLPDecoder(code_dim, output_shape, list(reversed(hidden)), act)
    if architecture == "conv":
        return ConvDecoder(code_dim, output_shape, base=hidden[0] if hidden else 32)
    raise ConfigError(f"unknown architecture {architecture!r}; choose mlp or conv")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "mlp",
    "activation",
    "MLPEncoder",
    "MLPDecoder",
    "ConvEncoder",
    "ConvDecoder",
    "build_encoder",
    "build_decoder",
    "count_parameters",
]
