"""Variational autoencoders (Kingma & Welling 2014) and β-VAE (Higgins et al. 2017).

Encoder q(z|x) = N(μ(x), diag σ²(x)), prior p(z) = N(0, I), decoder p(x|z) (Bernoulli or Gaussian).
One phase, "elbo", minimises the negative evidence lower bound with the reparameterization
z = μ + σ ⊙ ε, ε ~ N(0, I):

    L(x) = E_q[-log p(x|z)] + β KL(q(z|x) || p(z)),   KL = ½ Σ_j (μ_j² + σ_j² - log σ_j² - 1)

The KL term is the regularizer: it keeps the codes of all inputs overlapping the prior, so the decoder
cannot give low energy to a region of code space that the data does not use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from regae.engine.phase import Batch, Phase
from regae.errors import ConfigError
from regae.models.base import Autoencoder, AutoencoderConfig, register_model


@dataclass
class VAEConfig(AutoencoderConfig):
    type: str = "vae"
    code_dim: int = 16
    beta: float = 1.0  # weight of the KL term; β > 1 is β-VAE

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {self.beta}")


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) || N(0, I)) per sample, summed over code dimensions."""
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1).sum(1)


@register_model("vae", help="variational autoencoder: Gaussian posterior, KL to N(0, I)")
class VAE(Autoencoder):
    """Variational autoencoder; the phase "elbo" minimises -ELBO (β-weighted KL)."""

    config_class = VAEConfig
    generative = True
    schedulable = ("beta",)  # a KL warm-up: beta from 0 to 1

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.beta = config.beta

    def encoder_out_dim(self) -> int:
        return 2 * self.config.code_dim  # μ and log σ²

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean μ(x)."""
        return self.posterior(x)[0]

    def terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample (reconstruction NLL with one reparameterized sample, KL)."""
        mu, logvar = self.posterior(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return self.reconstruction_energy(x, self.decode(z)), gaussian_kl(mu, logvar)

    def loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        rec, kl = self.terms(batch.x)
        rec, kl = rec.mean(), kl.mean()
        return rec + self.beta * kl, {"reconstruction": rec.detach(), "kl": kl.detach()}

    def phases(self) -> list[Phase]:
        return self._register_phases([Phase("elbo", self.loss, self.parameters())])

    def energy(self, x: Tensor) -> Tensor:
        """Deterministic free energy at the posterior mean: -log p(x | μ(x)) + β KL(q(z|x) || p(z))."""
        mu, logvar = self.posterior(x)
        return self.reconstruction_energy(x, self.decode(mu)) + self.beta * gaussian_kl(mu, logvar)

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        mu, logvar = self.posterior(x)  # one encoder pass for every metric
        kl = gaussian_kl(mu, logvar)
        out_mean = self.decode(mu)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        m = {
            "energy": self.reconstruction_energy(x, out_mean) + self.beta * kl,
            "nelbo": self.reconstruction_energy(x, self.decode(z)) + kl,
            "kl": kl,
        }
        if self.config.likelihood == "bernoulli":
            m["mse"] = (self.mean(out_mean) - x).square().flatten(1).sum(1)
        return m

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Draw z ~ N(0, I) and return the decoder's mean."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        z = torch.randn(n, self.config.code_dim, device=next(self.parameters()).device)
        return self.mean(self.decode(z))

    @torch.no_grad()
    def figures(self, data, out_dir, *, name: str = ""):
        """Adds, for a 2-D code on images, the learned manifold: codes at Gaussian quantiles 5 %..95 %."""
        figs = super().figures(data, out_dir, name=name)
        if self.config.code_dim == 2 and len(self.input_shape) == 3:
            from scipy.stats import norm

            from regae import viz

            q = torch.tensor(norm.ppf(torch.linspace(0.05, 0.95, 20).numpy()), dtype=torch.float32)
            zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row = largest z2
            z = torch.stack([zx.flatten(), zy.flatten()], 1).to(next(self.parameters()).device)
            path = viz.manifold_grid(
                lambda c: self.mean(self.decode(c)),
                Path(out_dir) / "manifold.png",
                n=20,
                image_shape=self.input_shape[1:],
                points=z,
                title="decoded Gaussian quantiles",
            )
            figs.append(("Learned manifold (codes at N(0, I) quantiles 5 %..95 %)", path))
        return figs


@dataclass
class BetaVAEConfig(VAEConfig):
    type: str = "beta-vae"
    beta: float = 4.0


@register_model("beta-vae", help="β-VAE: a VAE whose KL term is weighted by β > 1 (disentangling pressure)")
class BetaVAE(VAE):
    """β-VAE (Higgins et al. 2017): the VAE objective with β > 1 (default 4)."""

    config_class = BetaVAEConfig
