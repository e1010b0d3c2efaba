"""Deterministic regularized autoencoders (thesis ch. 2; slides "Unsupervised learning").

All minimise the reconstruction energy E(x) = -log p(x | g(f(x))) plus a regularizer that limits the
volume of low energy:

    AE           none but the bottleneck (code_dim < input dim)          L = E(x)
    DAE          noise: reconstruct x from a corrupted x~ ~ C(x~|x)       L = -log p(x | g(f(x~)))
    SparseAE     sparsity of the code                                    L = E(x) + λ |f(x)|_1
    KSparseAE    only the k largest code units stay active (Makhzani & Frey 2013)
    CAE          contraction: small encoder Jacobian                     L = E(x) + λ ||∂f(x)/∂x||_F²

Each has one training phase, "reconstruction", minimising ``loss`` (the base class's default phase).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jacrev, vmap

from regae.config import check_choice
from regae.engine.phase import Batch
from regae.errors import ConfigError
from regae.models.base import Autoencoder, AutoencoderConfig, register_model
from regae.nn import activation


@register_model("ae", help="plain autoencoder: the bottleneck is its only regularizer")
class AE(Autoencoder):
    """Plain autoencoder, L = E(x) (the base class's reconstruction phase). Regularized only by a code
    smaller than the input."""


# ------------------------------------------------------------------------------------------- denoising


@dataclass
class DAEConfig(AutoencoderConfig):
    type: str = "dae"
    noise: str = "gaussian"  # "gaussian", "masking" (zero a fraction) or "salt_and_pepper"
    noise_std: float = 0.3  # gaussian: std of the additive noise
    noise_prob: float = 0.25  # masking / salt_and_pepper: fraction of corrupted inputs

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.noise", self.noise, ("gaussian", "masking", "salt_and_pepper"))
        if self.noise_std < 0:
            raise ConfigError(f"model.noise_std must be >= 0, got {self.noise_std}")
        if not 0 <= self.noise_prob <= 1:
            raise ConfigError(f"model.noise_prob must be in [0, 1], got {self.noise_prob}")


def corrupt(x: Tensor, noise: str, std: float, prob: float) -> Tensor:
    """Sample x~ ~ C(x~ | x)."""
    if noise == "gaussian":
        return x + std * torch.randn_like(x)
    hit = torch.rand_like(x) < prob
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    # salt and pepper: corrupted inputs become the min or max of the data range, with equal odds
    salt = torch.rand_like(x) < 0.5
    return torch.where(hit, torch.where(salt, 1.0, 0.0).to(x.dtype), x)


@register_model(
    "dae", help="denoising autoencoder: reconstruct x from a corrupted copy (Gaussian, masking, salt and pepper)"
)
class DAE(Autoencoder):
    """Denoising AE (Vincent et al. 2008): L = -log p(x | g(f(x~))), x~ ~ C(x~ | x)."""

    config_class = DAEConfig
    schedulable = ("noise_std", "noise_prob")

    def __init__(self, config: DAEConfig):
        super().__init__(config)
        self.noise_std = config.noise_std
        self.noise_prob = config.noise_prob

    def loss(self, batch: Batch) -> Tensor:
        x_noisy = corrupt(batch.x, self.config.noise, self.noise_std, self.noise_prob)
        return self.reconstruction_energy(batch.x, self.decode(self.encode(x_noisy))).mean()


# -------------------------------------------------------------------------------------------- sparse


@dataclass
class SparseAEConfig(AutoencoderConfig):
    type: str = "sparse-ae"
    code_dim: int = 256  # sparse codes are usually over-complete
    sparsity_weight: float = 1e-3  # λ of the L1 penalty (per code unit, summed)
    code_activation: str = "relu"  # non-negative codes make "active" meaningful

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity_weight < 0:
            raise ConfigError(f"model.sparsity_weight must be >= 0, got {self.sparsity_weight}")


@register_model("sparse-ae", help="sparse autoencoder: L1 penalty on the code")
class SparseAE(Autoencoder):
    """L = E(x) + λ Σ_j |f_j(x)|."""

    config_class = SparseAEConfig
    schedulable = ("sparsity_weight",)

    def __init__(self, config: SparseAEConfig):
        super().__init__(config)
        self.code_act = activation(config.code_activation)
        self.sparsity_weight = config.sparsity_weight

    def encode(self, x: Tensor) -> Tensor:
        return self.code_act(self.encoder(x))

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.encode(batch.x)
        rec = self.reconstruction_energy(batch.x, self.decode(z)).mean()
        l1 = z.abs().sum(1).mean()
        return rec + self.sparsity_weight * l1, {"energy": rec.detach(), "l1": l1.detach()}

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        m = super().eval_metrics(x, y)
        m["active_fraction"] = (self.encode(x) > 0).float().mean(1)
        return m


# -------------------------------------------------------------------------------------------- k-sparse


@dataclass
class KSparseAEConfig(AutoencoderConfig):
    type: str = "k-sparse-ae"
    code_dim: int = 256
    k: int = 25  # active code units per sample during training
    test_alpha: float = 1.0  # at encoding time keep alpha * k units (the paper uses alpha >= 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.k <= self.code_dim:
            raise ConfigError(f"model.k must be in [1, code_dim={self.code_dim}], got {self.k}")
        if self.test_alpha < 1:
            raise ConfigError(f"model.test_alpha must be >= 1, got {self.test_alpha}")


def top_k_mask(z: Tensor, k: int) -> Tensor:
    """Keep the k largest entries of each row of z, zero the rest."""
    if k >= z.shape[1]:
        return z
    threshold = z.topk(k, dim=1).values[:, -1:]
    return z * (z >= threshold)


@register_model("k-sparse-ae", help="k-sparse autoencoder: keep the k largest code units (Makhzani & Frey 2013)")
class KSparseAE(Autoencoder):
    """Linear code units, only the k largest kept: z = supp_k(W x + b). ``k`` can be scheduled
    (the paper starts with a large k and lowers it, so no unit dies early)."""

    config_class = KSparseAEConfig
    schedulable = ("k",)

    def __init__(self, config: KSparseAEConfig):
        super().__init__(config)
        self.k = config.k

    def encode(self, x: Tensor) -> Tensor:
        k = self.k if self.training else min(self.config.code_dim, math.ceil(self.config.test_alpha * self.k))
        return top_k_mask(self.encoder(x), k)


# ----------------------------------------------------------------------------------------- contractive


@dataclass
class CAEConfig(AutoencoderConfig):
    type: str = "cae"
    contraction_weight: float = 0.1  # λ of ||J_f(x)||_F²
    code_activation: str = "sigmoid"  # Rifai et al. use a sigmoid code layer

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contraction_weight < 0:
            raise ConfigError(f"model.contraction_weight must be >= 0, got {self.contraction_weight}")


@register_model("cae", help="contractive autoencoder: penalise the Frobenius norm of the encoder Jacobian")
class CAE(Autoencoder):
    """L = E(x) + λ ||J_f(x)||_F², with the exact Jacobian (Rifai et al. 2011).

    The Jacobian of each sample is computed by reverse-mode autodiff, vectorised over the batch
    (``vmap(jacrev(f))``): code_dim vector-Jacobian products, exact for any encoder without
    batch-coupled layers (no batch norm), and differentiable, so the penalty trains the encoder.
    """

    config_class = CAEConfig
    schedulable = ("contraction_weight",)

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        self.code_act = activation(config.code_activation)
        self.contraction_weight = config.contraction_weight

    def encode(self, x: Tensor) -> Tensor:
        return self.code_act(self.encoder(x))

    def jacobian(self, x: Tensor) -> Tensor:
        """∂f(x)/∂x per sample: shape (N, code_dim, *input_shape)."""
        return vmap(jacrev(lambda xi: self.encode(xi.unsqueeze(0)).squeeze(0)))(x)

    def contraction(self, x: Tensor) -> Tensor:
        """||J_f(x)||_F² per sample."""
        return self.jacobian(x).square().flatten(1).sum(1)

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        rec = self.energy(batch.x).mean()
        jac = self.contraction(batch.x).mean()
        return rec + self.contraction_weight * jac, {"energy": rec.detach(), "jacobian_fro2": jac.detach()}

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        m = super().eval_metrics(x, y)
        with torch.enable_grad():
            m["jacobian_fro2"] = self.contraction(x[:200]).detach().mean().expand(x.shape[0])
        return m
