"""Priors p(z) for adversarial regularization: anything we can sample from (AAE paper §2.1, §2.3).

An AAE only needs samples of p(z), never its density, so a prior is just ``sample(n)`` and, for the
label-conditioned adversary (§2.3), ``sample(n, labels)`` drawing each code from that label's part of the
prior (its mixture component, its stretch of the swiss roll).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from regae.errors import ConfigError
from regae.registry import PRIORS


@dataclass
class Prior:
    """Base class. ``dim``: code size; ``num_classes``: labels it can condition on (0: none)."""

    dim: int = 2

    num_classes = 0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"prior dim must be >= 1, got {self.dim}")

    def sample(self, n: int, labels: Tensor | None = None, *, device: torch.device | str = "cpu") -> Tensor:
        """``n`` codes (n, dim); with ``labels`` (n,), each from that label's part of the prior."""
        if labels is not None:
            self._check_labels(labels, n)
            return self._sample_conditional(labels.to(device))
        return self._sample(n, torch.device(device))

    def _sample(self, n: int, device: torch.device) -> Tensor:
        raise NotImplementedError

    def _sample_conditional(self, labels: Tensor) -> Tensor:
        raise ConfigError(
            f"the {type(self).__name__} prior cannot be sampled conditioned on a label; use a prior with "
            "components (mixture-2d, swiss-roll, categorical) for a label-conditioned adversary"
        )

    def _check_labels(self, labels: Tensor, n: int) -> None:
        if labels.shape != (n,):
            raise ConfigError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if self.num_classes and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"labels must lie in [0, {self.num_classes}) for this prior")


@PRIORS.register("gaussian", help="isotropic Gaussian N(0, std² I)")
@dataclass
class GaussianPrior(Prior):
    std: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.std <= 0:
            raise ConfigError(f"gaussian prior std must be > 0, got {self.std}")

    def _sample(self, n: int, device: torch.device) -> Tensor:
        return self.std * torch.randn(n, self.dim, device=device)


@PRIORS.register("uniform", help="uniform on the box [low, high]^dim")
@dataclass
class UniformPrior(Prior):
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.high > self.low:
            raise ConfigError(f"uniform prior needs high > low, got [{self.low}, {self.high}]")

    def _sample(self, n: int, device: torch.device) -> Tensor:
        return self.low + (self.high - self.low) * torch.rand(n, self.dim, device=device)


@PRIORS.register("categorical", help="one-hot vectors of a uniform Categorical over dim classes")
@dataclass
class CategoricalPrior(Prior):
    dim: int = 10

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.dim

    def _sample(self, n: int, device: torch.device) -> Tensor:
        return self._sample_conditional(torch.randint(self.dim, (n,), device=device))

    def _sample_conditional(self, labels: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(labels, self.dim).float()


@PRIORS.register("concrete", help="Concrete (Gumbel-softmax) relaxation of a uniform Categorical: near-one-hot vectors")
@dataclass
class ConcretePrior(CategoricalPrior):
    """softmax((g + log π) / τ) with g ~ Gumbel(0, 1)^dim and uniform π (Maddison et al. 2017; Jang et al. 2017):
    points of the simplex that approach the one-hot vertices as the temperature τ → 0.

    Conditioned on a label k it samples the same distribution restricted to argmax = k, exactly, with the
    Gumbel top-down construction: the maximum is Gumbel(log dim) and lands on k (the argmax of Gumbels is
    independent of their maximum), every other coordinate is a Gumbel truncated below that maximum."""

    temperature: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dim < 2 or self.temperature <= 0:
            raise ConfigError(f"concrete prior needs dim >= 2 and temperature > 0, got {self.dim}, {self.temperature}")

    def _sample_conditional(self, labels: Tensor) -> Tensor:
        n, dev = labels.shape[0], labels.device

        def gumbel(*shape: int) -> Tensor:  # -log E with E ~ Exp(1), drawn on the device
            return -torch.empty(shape, device=dev).exponential_().log()

        top = gumbel(n, 1) + math.log(self.dim)
        # a Gumbel(0, 1) truncated to (-inf, top]: -log(exp(-top) + exp(-g))
        rest = -torch.logaddexp(-top, -gumbel(n, self.dim))
        g = rest.scatter(1, labels[:, None], top)
        return (g / self.temperature).softmax(1)


@dataclass
class Labeled2DPrior(Prior):
    """A 2-D prior made of ``k`` labeled parts (mixture components, stretches of a roll): label-conditioned."""

    k: int = 10
    min_k: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if self.dim != 2:
            raise ConfigError(f"the {type(self).__name__} is 2-D; got dim={self.dim}")
        if self.k < self.min_k:
            raise ConfigError(f"{type(self).__name__} needs k >= {self.min_k} parts, got {self.k}")

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return self.k

    def _sample(self, n: int, device: torch.device) -> Tensor:
        return self._sample_conditional(torch.randint(self.k, (n,), device=device))

    def part_of(self, z: Tensor) -> Tensor:
        """The part (label) each 2-D point belongs to: what fig. 4 shows by colour."""
        raise NotImplementedError


@PRIORS.register("mixture-2d", help="K elongated 2-D Gaussians arranged radially on a circle (AAE fig. 2b, 4a)")
@dataclass
class Mixture2DPrior(Labeled2DPrior):
    """The AAE paper's mixture of K 2-D Gaussians: component k is N((radius, 0), diag(σ_r², σ_t²)) rotated by
    2πk/K, so the components are radial petals around the origin."""

    radius: float = 1.4  # distance of each component's centre from the origin (paper: unspecified; ~1.4)
    radial_std: float = 0.5
    tangential_std: float = 0.05
    min_k: ClassVar[int] = 2

    def _sample_conditional(self, labels: Tensor) -> Tensor:
        n = labels.shape[0]
        eps = torch.randn(n, 2, device=labels.device)
        x = self.radius + self.radial_std * eps[:, 0]
        y = self.tangential_std * eps[:, 1]
        angle = labels.float() * (2 * math.pi / self.k)
        c, s = angle.cos(), angle.sin()
        return torch.stack([c * x - s * y, s * x + c * y], 1)

    def part_of(self, z: Tensor) -> Tensor:
        """The most likely component: the largest log-density over the K rotated Gaussians."""
        angle = torch.arange(self.k, device=z.device) * (2 * math.pi / self.k)
        c, s = angle.cos(), angle.sin()  # rotate z back by each component's angle
        x = c * z[:, :1] + s * z[:, 1:]
        y = -s * z[:, :1] + c * z[:, 1:]
        logp = -(((x - self.radius) / self.radial_std) ** 2 + (y / self.tangential_std) ** 2) / 2
        return logp.argmax(1)

    def component_grid(self, label: int, n: int = 10) -> Tensor:
        """An n×n grid over component ``label`` at Gaussian percentiles 5 %..95 % of each of its axes
        (rows: radial, columns: tangential), as in fig. 4b."""
        from scipy.stats import norm

        q = torch.tensor(norm.ppf(torch.linspace(0.05, 0.95, n).numpy()), dtype=torch.float32)
        x, y = torch.meshgrid(self.radius + self.radial_std * q, self.tangential_std * q, indexing="ij")
        angle = torch.tensor(label * 2 * math.pi / self.k)
        c, s = angle.cos(), angle.sin()
        return torch.stack([c * x - s * y, s * x + c * y], -1).reshape(n * n, 2)


@PRIORS.register(
    "swiss-roll", help="2-D swiss roll; label k covers the k-th of K equal stretches of its axis (fig. 4c)"
)
@dataclass
class SwissRollPrior(Labeled2DPrior):
    """A point at position t ∈ [0, 1) along the roll axis sits at r(t)·(cos θ, sin θ) with θ = turns·2π·√t
    (uniform density along the arc) plus Gaussian noise; label k draws t from [k/K, (k+1)/K)."""

    turns: float = 1.5
    noise: float = 0.05
    scale: float = 2.0

    def point(self, t: Tensor) -> Tensor:
        """The roll's axis at positions t ∈ [0, 1]."""
        theta = self.turns * 2 * math.pi * t.sqrt()
        r = self.scale * (0.1 + t.sqrt())
        return torch.stack([r * theta.cos(), r * theta.sin()], 1)

    def _sample(self, n: int, device: torch.device) -> Tensor:
        t = torch.rand(n, device=device)
        return self.point(t) + self.noise * torch.randn(n, 2, device=device)

    def part_of(self, z: Tensor) -> Tensor:
        """The stretch of the nearest point of the roll's axis (on a grid of 4001 positions)."""
        t = torch.linspace(0, 1, 4001, device=z.device)
        nearest = torch.cdist(z, self.point(t)).argmin(1)
        return (t[nearest] * self.k).floor().long().clamp(max=self.k - 1)

    def _sample_conditional(self, labels: Tensor) -> Tensor:
        t = (labels.float() + torch.rand(labels.shape[0], device=labels.device)) / self.k
        return self.point(t) + self.noise * torch.randn(labels.shape[0], 2, device=labels.device)


def build_prior(name: str, dim: int, **kwargs) -> Prior:
    """A prior by registered name, e.g. ``build_prior("gaussian", 8, std=5.0)``; arguments are type-checked
    against the prior's fields (so ``k: 10.0`` from a config becomes the integer 10)."""
    from regae.config import from_dict

    return from_dict(PRIORS.get(name), {"dim": dim, **kwargs}, f"prior {name!r}")


__all__ = [
    "Prior",
    "GaussianPrior",
    "UniformPrior",
    "CategoricalPrior",
    "ConcretePrior",
    "Mixture2DPrior",
    "SwissRollPrior",
    "Labeled2DPrior",
    "build_prior",
]
