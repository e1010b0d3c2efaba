"""Adversarial autoencoders (Makhzani et al. 2016), every variant of the paper.

An AAE is an autoencoder whose code distribution q(z) = E_x q(z|x) is matched to a prior p(z) by a GAN
played in code space. Each training step has the paper's phases (§2):

    reconstruction   encoder + decoder minimise the reconstruction cost of x
    regularization   the discriminator D learns to tell z ~ p(z) (label 1) from z ~ q(z|x) (label 0);
                     then the encoder, as the generator, learns to make D say 1 on its codes
    semi_supervised  (labeled variants) q(y|x) minimises the cross-entropy on a labeled minibatch

The regularization phase is two engine phases, ``discriminator`` then ``generator``, each with its own
optimizer (appendix A: SGD, momentum 0.1, for both). Variants:

    aae                    unsupervised AAE with any prior; ``conditional=true`` is the label-conditioned
                           adversary of §2.3 (one-hot label + an "unlabeled" class fed to D)
    supervised-aae         §4: the one-hot label goes to the decoder, z keeps the style
    semi-supervised-aae    §5: q(y|x) Categorical + q(z|x) Gaussian, two adversaries, three phases
    clustering-aae         §6: the same without labels; y is a cluster over K categories
    aae-dim-reduction      §7: the code is W_C·y + z (learned cluster heads W_C with a hinge distance cost,
                           or fixed W_C = scale·I)
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regae.config import check_choice
from regae.data.augment import random_affine, random_shift, random_stroke_width
from regae.data.base import ArrayDataset, DataSplits
from regae.engine.phase import Batch, Phase
from regae.errors import ConfigError, DataError
from regae.models.base import Autoencoder, AutoencoderConfig, register_model
from regae.nn import MLPDecoder, activation, mlp
from regae.priors import Prior, build_prior


@dataclass
class AAEConfig(AutoencoderConfig):
    """Appendix A.1 defaults: 2×1000 ReLU encoder/decoder/discriminator, 8-D code."""

    type: str = "aae"
    code_dim: int = 8
    encoder: str = "deterministic"  # q(z|x): "deterministic", "gaussian" (reparameterized) or "universal"
    noise_dim: int = 8  # universal approximator: size of the noise η fed to the encoder with x
    prior: str = "gaussian"  # a name from regae.priors (gaussian, mixture-2d, swiss-roll, uniform...)
    prior_args: dict[str, Any] = field(default_factory=dict)  # e.g. {std: 5.0} (A.1) or {k: 10}
    conditional: bool = False  # §2.3: feed one-hot(label or "unlabeled") to the discriminator
    disc_hidden: tuple[int, ...] = (1000, 1000)
    recon_loss: str = "bce"  # "bce" (Bernoulli NLL) or "half_sse" (½||x - sigmoid(out)||², appendix A)
    input_noise_std: float = 0.0  # A.2.1: Gaussian noise added to the input at training time only
    input_dropout: float = 0.0  # A.3: dropout on the input
    # Not in the paper (named in reports when used): a geometric corruption of the encoder's input while
    # training, beside input_dropout: random rotations of up to input_rotation degrees, zooms by up to
    # input_scale and an elastic distortion of input_elastic pixels (σ input_elastic_sigma). The decoder
    # still reconstructs the clean image, so the code has to see through the pose: a denoising corruption.
    input_rotation: float = 0.0
    input_scale: float = 0.0
    input_elastic: float = 0.0
    input_elastic_sigma: float = 4.0
    # Not in the paper either: thicken or thin the encoder's input strokes by a random amount in
    # [-input_stroke, input_stroke] of a 3×3 dilation / erosion (the decoder again reconstructs the clean
    # image), so the code has to see through stroke width, another style a cluster should ignore.
    input_stroke: float = 0.0
    encoder_batchnorm: bool = False  # A.3: batch norm in the encoder layers
    init_std: float | None = None  # A.1: weights ~ N(0, init_std²); None keeps PyTorch's init
    # "alternating": the paper's phases (§2). "joint": one autoencoder step on reconstruction +
    # adversarial_weight · generator loss, then the discriminator on the same codes (the single joint step
    # of e.g. pythae's Adversarial_AE; one encoder pass per step instead of two).
    regularization: str = "alternating"
    adversarial_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.encoder", self.encoder, ("deterministic", "gaussian", "universal"))
        check_choice("model.recon_loss", self.recon_loss, ("bce", "half_sse"))
        check_choice("model.regularization", self.regularization, ("alternating", "joint"))
        if self.adversarial_weight < 0:
            raise ConfigError(f"model.adversarial_weight must be >= 0, got {self.adversarial_weight}")
        if self.architecture != "mlp":
            raise ConfigError("the AAE models are MLPs (appendix A); set model.architecture=mlp")
        if self.noise_dim < 1 or self.input_noise_std < 0 or not 0 <= self.input_dropout < 1:
            raise ConfigError("model.noise_dim must be >= 1, input_noise_std >= 0 and input_dropout in [0, 1)")
        if self.init_std is not None and self.init_std <= 0:
            raise ConfigError(f"model.init_std must be > 0 or null, got {self.init_std}")
        if not 0 <= self.input_rotation <= 180:
            raise ConfigError(f"model.input_rotation must lie in [0, 180] degrees, got {self.input_rotation}")
        if not 0 <= self.input_scale < 1:
            raise ConfigError(f"model.input_scale must lie in [0, 1), got {self.input_scale}")
        if self.input_elastic < 0 or not self.input_elastic_sigma > 0:
            raise ConfigError(
                "model.input_elastic must be >= 0 pixels and input_elastic_sigma > 0 pixels, got "
                f"{self.input_elastic} and {self.input_elastic_sigma}"
            )

        if not 0 <= self.input_stroke <= 1:
            raise ConfigError(f"model.input_stroke must lie in [0, 1], got {self.input_stroke}")

    @property
    def input_warp(self) -> bool:
        """Whether the encoder's input gets a geometric corruption (pose or stroke width)."""
        return bool(self.input_rotation or self.input_scale or self.input_elastic or self.input_stroke)


def check_num_classes(k: int) -> None:
    if k < 2:
        raise ConfigError(f"model.num_classes must be >= 2 (K <= 1 is no labels and no clustering), got {k}")


def gan_losses(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator loss -log D(z_prior) - log(1 - D(z_encoded)), averaged over each half."""
    return F.binary_cross_entropy_with_logits(
        logits_real, torch.ones_like(logits_real)
    ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))


def generator_loss(logits_fake: Tensor) -> Tensor:
    """The encoder's (non-saturating) loss -log D(z_encoded)."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def discriminator(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    return mlp([in_dim, *hidden, 1])


@contextmanager
def frozen(module: nn.Module, enable: bool = True):
    """Temporarily stop weight gradients of ``module`` (its input still gets gradients): the generator
    step needs ∂D/∂z only, so D's weight-gradient matmuls would be wasted work."""
    if not enable:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _AAEBase(Autoencoder):
    """Shared parts: the encoder trunk and heads, input corruption, the adversarial phases."""

    config_class: ClassVar[type] = AAEConfig
    generative = True
    ddp_find_unused_parameters = True  # each phase updates only its own networks

    # ------------------------------------------------------------------------------------- networks

    def build_networks(self) -> None:
        c = self.config
        if c.input_warp and len(self.input_shape) != 3:
            raise ConfigError(
                "model.input_rotation / input_scale / input_elastic / input_stroke warp images (C, H, W); "
                f"this data has samples of shape {tuple(self.input_shape)}"
            )
        d_in = math.prod(self.input_shape) + (c.noise_dim if c.encoder == "universal" else 0)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise([d_in, *c.hidden]):
            layers.append(nn.Linear(a, b))
            if c.encoder_batchnorm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(activation(c.activation))
        self.trunk = nn.Sequential(*layers) if layers else nn.Identity()
        width = c.hidden[-1] if c.hidden else d_in
        self.z_head = self.head(width, 2 * c.code_dim if c.encoder == "gaussian" else c.code_dim)
        self.build_heads(width)
        self.decoder = MLPDecoder(self.decoder_in_dim(), self.input_shape, list(reversed(c.hidden)), c.activation)
        self.prior = self.build_prior()
        if c.init_std is not None:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=c.init_std)
                    nn.init.zeros_(m.bias)

    def head(self, width: int, out: int) -> nn.Module:
        """An output layer of q(·|x); A.3 puts batch norm on these too ("including the last layer of
        q(y|x) and q(z|x)")."""
        if self.config.encoder_batchnorm:
            return nn.Sequential(nn.Linear(width, out), nn.BatchNorm1d(out))
        return nn.Linear(width, out)

    def build_heads(self, width: int) -> None:
        """Variant-specific heads and discriminators."""

    def decoder_in_dim(self) -> int:
        return self.config.code_dim

    def build_prior(self) -> Prior:
        return build_prior(self.config.prior, self.config.code_dim, **self.config.prior_args)

    # ---------------------------------------------------------------------------------------- encoder

    def features(self, x: Tensor) -> Tensor:
        """The shared encoder layers; input noise / dropout only while training (appendix A)."""
        c = self.config
        if self.training and c.input_warp:
            x = random_affine(
                x, c.input_rotation, c.input_scale, elastic=c.input_elastic, elastic_sigma=c.input_elastic_sigma
            )
            x = random_stroke_width(x, c.input_stroke)
        h = x.flatten(1)
        if self.training and c.input_noise_std > 0:
            h = h + c.input_noise_std * torch.randn_like(h)
        if self.training and c.input_dropout > 0:
            h = F.dropout(h, c.input_dropout)
        if c.encoder == "universal":  # q(z|x) = ∫ δ(z - f(x, η)) p(η) dη
            h = torch.cat([h, torch.randn(h.shape[0], c.noise_dim, device=h.device, dtype=h.dtype)], 1)
        return self.trunk(h)

    def style(self, h: Tensor) -> Tensor:
        """z from the trunk's features: a sample of q(z|x) while training, its mean otherwise."""
        out = self.z_head(h)
        if self.config.encoder != "gaussian":
            return out
        mu, logvar = out.chunk(2, 1)
        if not self.training:
            return mu
        return mu + (0.5 * logvar.clamp(-30, 20)).exp() * torch.randn_like(mu)

    def reconstruction_energy(self, x: Tensor, out: Tensor) -> Tensor:
        if self.config.recon_loss == "half_sse":
            return 0.5 * (torch.sigmoid(out) - x).square().flatten(1).sum(1)
        return super().reconstruction_energy(x, out)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) if self.config.recon_loss == "half_sse" else super().mean(out)

    # ------------------------------------------------------------------------------ phase plumbing

    def adversarial_codes(self, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
        """(real codes per adversary, encoded codes per adversary) for the regularization phase."""
        raise NotImplementedError

    def adversaries(self) -> list[nn.Module]:
        raise NotImplementedError

    supports_joint: ClassVar[bool] = False  # implements joint_parts

    def joint_parts(self, batch: Batch) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(decoder input, real codes, encoded codes) from one encoder pass, for regularization=joint."""
        raise NotImplementedError

    def joint_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """regularization=joint: reconstruction + λ·(-log D(q(z|x))) in one autoencoder step. The codes are
        kept for the discriminator step that follows, which thus sees the same codes as this step.

        In one process D's logits on the codes are kept too, with their graph (the phase keeps it): this
        step does not change D, so they are exactly the logits the discriminator step would compute, and
        the engine's backward of this phase (into the autoencoder's parameters only) skips D's weight
        gradients without freezing D. Under DDP or torch.compile D is frozen and run again instead."""
        latent, real, fake = self.joint_parts(batch)
        recon = self.reconstruction_energy(batch.x, self.decode(latent)).mean()
        reuse = not _distributed() and not torch.compiler.is_compiling()
        adv, logits = 0.0, []
        for D, f in zip(self.adversaries(), fake):
            with frozen(D, enable=not reuse and not _distributed()):
                logits.append(D(f))
            adv = adv + generator_loss(logits[-1])
        self._joint = (batch.x, real, [f.detach() for f in fake], logits if reuse else None)
        loss = recon + self.config.adversarial_weight * adv + self.generator_penalty(batch, fake)
        return loss, {"reconstruction": recon.detach(), "adversarial": adv.detach()}

    def discriminator_loss(self, batch: Batch) -> Tensor:
        # The encoder runs with its graph kept so the generator step that follows can reuse the codes:
        # exact, because this step changes only the discriminators, not the encoder. Not under DDP (its
        # reducer expects one backward per forward) nor torch.compile (a compiled phase is one autograd
        # node, whose saved tensors this step's backward frees).
        reuse = not _distributed() and not torch.compiler.is_compiling()
        joint, self._joint = getattr(self, "_joint", None), None
        if joint is not None and joint[0] is batch.x:
            real, fake, fake_logits = joint[1:]
            if fake_logits is not None:  # the joint phase's logits on these codes, D unchanged since
                self._codes = None
                return sum(gan_losses(D(r), lf) for D, r, lf in zip(self.adversaries(), real, fake_logits))
            reuse = False
        else:
            with torch.set_grad_enabled(reuse):
                real, fake = self.adversarial_codes(batch)
        self._codes = (batch.x, fake) if reuse else None
        loss = 0.0
        for D, r, f in zip(self.adversaries(), real, fake):
            logits = D(torch.cat([r, f.detach()]))  # one pass over real and encoded codes
            loss = loss + gan_losses(logits[: len(r)], logits[len(r) :])
        return loss

    def generator_loss(self, batch: Batch) -> Tensor:
        cached = getattr(self, "_codes", None)
        self._codes = None
        fake = cached[1] if cached is not None and cached[0] is batch.x else self.adversarial_codes(batch)[1]
        loss = 0.0
        for D, f in zip(self.adversaries(), fake):
            with frozen(D, enable=not _distributed()):
                loss = loss + generator_loss(D(f))
        return loss + self.generator_penalty(batch, fake)

    def generator_penalty(self, batch: Batch, fake: list[Tensor]) -> Tensor | float:
        """An extra term on the encoded codes in the generator phase (none in the paper's AAE)."""
        return 0.0

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.trunk.parameters(), *self.z_head.parameters()]

    def adversary_parameters(self) -> list[nn.Parameter]:
        return [p for D in self.adversaries() for p in D.parameters()]

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        adv = {id(p) for p in self.adversary_parameters()}
        return [p for p in self.parameters() if id(p) not in adv]

    def reconstruction_loss(self, batch: Batch) -> Tensor:
        return self.reconstruction_energy(batch.x, self.decode(self.latent(batch))).mean()

    def latent(self, batch: Batch) -> Tensor:
        """What the decoder receives for this batch."""
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        if self.config.regularization == "joint":
            if not self.supports_joint:
                raise ConfigError(f"model.regularization=joint is not available for {self.config.type}")
            return self._register_phases(
                [
                    Phase("autoencoder", self.joint_loss, self.autoencoder_parameters(), keep_graph=True),
                    Phase("discriminator", self.discriminator_loss, self.adversary_parameters()),
                ]
            )
        return self._register_phases(
            [
                Phase("reconstruction", self.reconstruction_loss, self.autoencoder_parameters()),
                Phase("discriminator", self.discriminator_loss, self.adversary_parameters()),
                Phase("generator", self.generator_loss, self.encoder_parameters()),
            ]
        )

    # --------------------------------------------------------------------------------------- figures

    @torch.no_grad()
    def samples_with_neighbours(self, train: ArrayDataset, out: Path, n: int = 10):
        """Fig. 5: samples, and next to each its nearest training image (pixel Euclidean distance)."""
        from regae import viz

        s = self.sample(n)
        xs = train.x.flatten(1)
        d = torch.cdist(s.flatten(1), xs[:20000])
        nn_idx = d.argmin(1)
        grid = torch.stack([s, train.x[nn_idx]], 1).reshape(2 * n, *self.input_shape)
        return viz.image_grid(grid, out, nrow=2, title="sample | nearest training image")


# ----------------------------------------------------------------------------------- unsupervised


@register_model("aae", help="adversarial autoencoder with any prior; conditional=true adds labels to the adversary")
class AAE(_AAEBase):
    """§2: q(z|x) matched to p(z) by an adversary; §2.3 with ``conditional``: D also sees one-hot(y) with an
    extra "unlabeled" class, positives drawn from that label's part of the prior."""

    schedulable = ("prior_noise",)

    @property
    def prior_noise(self) -> float:
        """The width of a swiss-roll prior, schedulable (``train.schedules.prior_noise``): a roll that starts
        wide and narrows lets each label's codes find their stretch before the stretches separate."""
        return self._prior_with_width().noise

    @prior_noise.setter
    def prior_noise(self, value: float) -> None:
        self._prior_with_width().noise = float(value)
        # the saved config carries the width the model ends with, so a reloaded model samples the same prior
        self.config.prior_args = {**self.config.prior_args, "noise": float(value)}

    def _prior_with_width(self) -> Prior:
        if not hasattr(self.prior, "noise"):
            raise ConfigError(
                f"train.schedules.prior_noise needs a prior with a width (swiss-roll), not {self.config.prior!r}"
            )
        return self.prior

    def build_heads(self, width: int) -> None:
        c = self.config
        self.num_labels = self.build_prior().num_classes if c.conditional else 0
        if c.conditional and self.num_labels < 2:
            raise ConfigError(
                f"conditional=true needs a prior with components (mixture-2d, swiss-roll); "
                f"{c.prior!r} cannot be sampled conditioned on a label"
            )
        extra = self.num_labels + 1 if c.conditional else 0
        self.disc = discriminator(c.code_dim + extra, c.disc_hidden)

    def adversaries(self) -> list[nn.Module]:
        return [self.disc]

    def encode(self, x: Tensor) -> Tensor:
        return self.style(self.features(x))

    supports_joint = True

    def decoder_input(self, z: Tensor, batch: Batch) -> Tensor:
        return z

    def latent(self, batch: Batch) -> Tensor:
        return self.decoder_input(self.encode(batch.x), batch)

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Energy, and with the label-conditioned adversary (§2.3) ``part_error``: the % of labeled codes
        outside their label's part of the prior (fig. 4 in one number; the energy alone cannot say whether
        the codes follow the prior). Unlabeled samples (y = -1) are NaN, so it averages over labeled ones."""
        z = self.encode(x)
        m = self.output_metrics(x, self.decode(z))
        if self.config.conditional and y is not None:
            wrong = 100 * (self.prior.part_of(z) != y).float()
            m["part_error"] = wrong.masked_fill(y < 0, float("nan"))
        return m

    def joint_parts(self, batch: Batch) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        z = self.encode(batch.x)
        real, fake = self.code_pairs(batch, z)
        return self.decoder_input(z, batch), real, fake

    def adversarial_codes(self, batch: Batch):
        return self.code_pairs(batch, self.encode(batch.x))

    def code_pairs(self, batch: Batch, fake: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(prior samples, encoded codes) for the adversary, with the one-hot label when conditional."""
        n = batch.x.shape[0]
        if not self.config.conditional:
            return [self.prior.sample(n, device=fake.device)], [fake]
        if batch.y is None:
            raise DataError("conditional=true needs labels in the training data (y = -1 marks unlabeled)")
        y = batch.y
        if (y >= self.num_labels).any():
            raise DataError(f"labels must lie in [-1, {self.num_labels}) for this prior")
        labeled = y >= 0
        # positives: labeled rows from their label's component, unlabeled rows from the whole prior
        real = torch.where(
            labeled[:, None],
            self.prior.sample(n, y.clamp(min=0), device=fake.device),
            self.prior.sample(n, device=fake.device),
        )
        onehot = F.one_hot(torch.where(labeled, y, self.num_labels), self.num_labels + 1).to(fake.dtype)
        return [torch.cat([real, onehot], 1)], [torch.cat([fake, onehot], 1)]

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        dev = next(self.parameters()).device
        return self.mean(self.decode(self.prior.sample(n, labels, device=dev)))

    @torch.no_grad()
    def figures(self, data: ArrayDataset, out_dir: Path, *, name: str = ""):
        from regae import viz

        figs = super().figures(data, Path(out_dir), name=name)
        if len(self.input_shape) != 3:
            return figs
        out_dir = Path(out_dir)
        dev = next(self.parameters()).device
        if self.config.code_dim == 2 and self.config.prior == "gaussian":  # fig. 2e: Gaussian percentiles
            from scipy.stats import norm

            std = float(self.config.prior_args.get("std", 1.0))
            q = torch.tensor(norm.ppf(torch.linspace(0.05, 0.95, 20).numpy()) * std, dtype=torch.float32)
            zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
            z = torch.stack([zx.flatten(), zy.flatten()], 1).to(dev)
            figs.append(
                (
                    "Manifold at the prior's percentiles (fig. 2e)",
                    viz.manifold_grid(
                        lambda c: self.mean(self.decode(c)),
                        out_dir / "manifold.png",
                        n=20,
                        image_shape=self.input_shape[1:],
                        points=z,
                    ),
                )
            )
        if self.config.conditional:
            from regae.priors import Mixture2DPrior, SwissRollPrior

            k = min(self.num_labels, 10)
            labels = torch.arange(k, device=dev).repeat_interleave(10)
            figs.append(
                (
                    "Samples per label-conditioned prior component (rows: label)",
                    viz.image_grid(self.sample(len(labels), labels), out_dir / "components.png", nrow=10),
                )
            )
            decode = lambda z: self.mean(self.decode(z.to(dev)))  # noqa: E731
            if isinstance(self.prior, Mixture2DPrior):  # fig. 4b: percentile grids of the first 3 components
                for c in range(min(3, k)):
                    figs.append(
                        (
                            f"Component {c} of the mixture at its Gaussian percentiles (fig. 4b; rows radial, "
                            "columns tangential)",
                            viz.image_grid(
                                decode(self.prior.component_grid(c, 10)), out_dir / f"component_{c}.png", nrow=10
                            ),
                        )
                    )
            if isinstance(self.prior, SwissRollPrior):  # fig. 4d: a walk along the roll's axis
                walk = self.prior.point(torch.linspace(0, 1, 100))
                figs.append(
                    (
                        "Walking along the swiss roll's axis, start to end in reading order (fig. 4d)",
                        viz.image_grid(decode(walk), out_dir / "roll_walk.png", nrow=10),
                    )
                )
        if self._train is not None:
            figs.append(
                (
                    "Samples and their nearest training images (fig. 5)",
                    self.samples_with_neighbours(self._train, out_dir / "neighbours.png"),
                )
            )
        return figs

    def attach_data(self, splits: DataSplits) -> None:
        self._train = splits.train

    _train: ArrayDataset | None = None


# ---------------------------------------------------------------------------------------- supervised


@dataclass
class SupervisedAAEConfig(AAEConfig):
    type: str = "supervised-aae"
    code_dim: int = 15  # §4: a 15-D Gaussian style code
    num_classes: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_num_classes(self.num_classes)


@register_model("supervised-aae", help="§4: one-hot label to the decoder, style in z (style/content grids)")
class SupervisedAAE(AAE):
    """The decoder reconstructs x from (z, one-hot y), so z is pushed to hold only the style."""

    config_class = SupervisedAAEConfig

    def decoder_in_dim(self) -> int:
        return self.config.code_dim + self.config.num_classes

    def _onehot(self, y: Tensor | None) -> Tensor:
        if y is None or (y < 0).any() or (y >= self.config.num_classes).any():
            raise DataError(f"supervised-aae needs a label in [0, {self.config.num_classes}) for every sample")
        return F.one_hot(y, self.config.num_classes).float()

    def decoder_input(self, z: Tensor, batch: Batch) -> Tensor:
        return torch.cat([z, self._onehot(batch.y)], 1)

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        if y is None:
            return {}
        return {"energy": self.reconstruction_energy(x, self.decode(self.latent(Batch(x, y))))}

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise DataError("supervised-aae reconstructs from (x, y): pass the labels")
        return self.mean(self.decode(self.latent(Batch(x, y))))

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        dev = next(self.parameters()).device
        if labels is None:
            labels = torch.randint(self.config.num_classes, (n,), device=dev)
        z = self.prior.sample(n, device=dev)
        return self.mean(self.decode(torch.cat([z, F.one_hot(labels, self.config.num_classes).float()], 1)))

    @torch.no_grad()
    def figures(self, data: ArrayDataset, out_dir: Path, *, name: str = ""):
        """Fig. 7: each row one style z (encoded from a test image), each column one label."""
        from regae import viz

        out_dir = Path(out_dir)
        k, rows = self.config.num_classes, 10
        z = self.encode(data.x[:rows]).repeat_interleave(k, 0)
        labels = torch.arange(k, device=z.device).repeat(rows)
        grid = self.mean(self.decode(torch.cat([z, F.one_hot(labels, k).float()], 1)))
        figs = [
            (
                "Style (rows, from test images) × content (columns: label) (fig. 7)",
                viz.image_grid(grid, out_dir / "style_content.png", nrow=k),
            )
        ]
        z = self.encode(data.x[:2000])
        figs.append(
            (
                "Style codes of test images, coloured by label",
                viz.latent_scatter(z, out_dir / "latent.png", labels=data.y[:2000]),
            )
        )
        return figs


# ----------------------------------------------------------------------------------- semi-supervised


@dataclass
class SemiSupervisedAAEConfig(AAEConfig):
    """Appendix A.2.1: style and label representations of size 10, Gaussian noise 0.3 on the input."""

    type: str = "semi-supervised-aae"
    code_dim: int = 10  # style z
    num_classes: int = 10  # label / cluster representation y
    recon_loss: str = "half_sse"
    # Not in the paper (named in reports when used): random translations of up to this many pixels of the
    # labeled minibatch in the semi_supervised phase; 100 labels are few enough for q(y|x) to memorise them.
    label_shift: int = 0
    # Not in the paper (named in reports when used): random rotations of up to this many degrees and zooms
    # by up to this fraction of the labeled minibatch, before the shift; more variety than 25 translations.
    label_rotation: float = 0.0
    label_scale: float = 0.0
    # Not in the paper (named in reports when used): Simard et al.'s (2003) elastic distortion of the labeled
    # minibatch, a smoothed random displacement field of this many pixels (their MNIST setting: 34, with a
    # Gaussian of std label_elastic_sigma = 4 pixels), in the same resampling as the rotation and zoom.
    label_elastic: float = 0.0
    label_elastic_sigma: float = 4.0
    # Not in the paper (named in reports when used): > 0 draws the categorical adversary's positive samples
    # from the Concrete relaxation of Cat(y) at this temperature instead of exact one-hots. Matching exact
    # one-hots drives the softmax to saturation, where its Jacobian vanishes: a category the encoder has
    # collapsed into can no longer be moved by the adversary. Generation still uses exact one-hots.
    category_temperature: float = 0.0
    # Not in the paper (named in reports when used): λ of KL(q̄(y) || uniform) in the generator phase, q̄(y)
    # the minibatch's mean of q(y|x). The categorical adversary judges one code at a time, so a category the
    # encoder has stopped using gets no gradient back (a dropped mode); this term pulls the batch's category
    # usage back towards uniform (the marginal-entropy term of RIM / IMSAT, Krause et al. 2010, Hu et al. 2017).
    cluster_balance: float = 0.0
    # Not in the paper (named in reports when used): λ of KL(q(y|x') || q(y|x'')) in the generator phase,
    # x' and x'' two independently corrupted copies of each image (the input warp and dropout), the first
    # held fixed: the self-augmented training of IMSAT (Hu et al. 2017). The adversary asks each q(y|x) to
    # be one-hot but not that an image keep its category under a small rotation; this term asks exactly that.
    cluster_consistency: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_num_classes(self.num_classes)
        if self.cluster_balance < 0:
            raise ConfigError(f"model.cluster_balance must be >= 0, got {self.cluster_balance}")
        if self.cluster_consistency < 0:
            raise ConfigError(f"model.cluster_consistency must be >= 0, got {self.cluster_consistency}")
        corrupted = self.input_warp or self.input_noise_std or self.input_dropout or self.encoder == "universal"
        if self.cluster_consistency and not corrupted:
            raise ConfigError(
                "model.cluster_consistency compares q(y|x) under two random corruptions of x, but nothing "
                "corrupts the input: set input_dropout, input_noise_std or an input warp (or encoder: universal)"
            )
        if self.label_shift < 0:
            raise ConfigError(f"model.label_shift must be >= 0 pixels, got {self.label_shift}")
        if not 0 <= self.label_rotation <= 180:
            raise ConfigError(f"model.label_rotation must lie in [0, 180] degrees, got {self.label_rotation}")
        if not 0 <= self.label_scale < 1:
            raise ConfigError(f"model.label_scale must lie in [0, 1), got {self.label_scale}")
        if self.label_elastic < 0:
            raise ConfigError(f"model.label_elastic must be >= 0 pixels, got {self.label_elastic}")
        if not self.label_elastic_sigma > 0:
            raise ConfigError(f"model.label_elastic_sigma must be > 0 pixels, got {self.label_elastic_sigma}")
        if self.category_temperature < 0:
            raise ConfigError(
                f"model.category_temperature must be >= 0 (0: exact one-hots), got {self.category_temperature}"
            )


@register_model("semi-supervised-aae", help="§5: q(y|x) Categorical + q(z|x) Gaussian, two adversaries, three phases")
class SemiSupervisedAAE(_AAEBase):
    """Encoder q(z, y|x) with a softmax head y and a style head z sharing the trunk; the decoder gets
    (y, z). Adversaries impose Cat(y) on y and N(0, σ²I) on z; the semi_supervised phase trains q(y|x)
    on labeled minibatches (every training sample with y >= 0)."""

    config_class = SemiSupervisedAAEConfig
    uses_labels: ClassVar[bool] = True
    schedulable = ("category_temperature", "label_elastic")

    def build_heads(self, width: int) -> None:
        c = self.config
        self.y_head = self.head(width, c.num_classes)
        self.disc_y = discriminator(c.num_classes, c.disc_hidden)
        self.disc_z = discriminator(c.code_dim, c.disc_hidden)
        self.categorical = build_prior("categorical", c.num_classes)
        self.category_temperature = c.category_temperature
        self._label_elastic = c.label_elastic

    @property
    def label_elastic(self) -> float:
        """α (pixels) of the labeled batch's elastic distortion. Schedulable (``train.schedules.label_elastic``):
        a warm-up from 0 lets q(y|x) learn the plain digits before the distortion bends their strokes."""
        return self._label_elastic

    @label_elastic.setter
    def label_elastic(self, value: float) -> None:
        if value < 0:
            raise ConfigError(f"label_elastic must be >= 0 pixels, got {value}")
        if value and not self.uses_labels:
            raise ConfigError(f"label_elastic needs labels; {self.config.type} here trains without them")
        self._label_elastic = float(value)

    @property
    def category_temperature(self) -> float:
        """τ of the categorical adversary's positive samples (0: exact one-hots). Schedulable
        (``train.schedules.category_temperature``), e.g. annealed from soft to nearly exact one-hots."""
        return getattr(self.category_prior, "temperature", 0.0)

    @category_temperature.setter
    def category_temperature(self, value: float) -> None:
        if value < 0:
            raise ConfigError(f"category_temperature must be >= 0 (0: exact one-hots), got {value}")
        k = self.config.num_classes
        self.category_prior = build_prior("concrete", k, temperature=value) if value else self.categorical

    def decoder_in_dim(self) -> int:
        return self.config.code_dim + self.config.num_classes

    def adversaries(self) -> list[nn.Module]:
        return [self.disc_y, self.disc_z]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*super().encoder_parameters(), *self.y_head.parameters()]

    def encode_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits of q(y|x), style z)."""
        h = self.features(x)
        return self.y_head(h), self.style(h)

    def represent(self, y_prob: Tensor, z: Tensor) -> Tensor:
        return torch.cat([y_prob, z], 1)

    def encode(self, x: Tensor) -> Tensor:
        logits, z = self.encode_parts(x)
        return self.represent(logits.softmax(1), z)

    def latent(self, batch: Batch) -> Tensor:
        return self.encode(batch.x)

    def adversarial_codes(self, batch: Batch):
        n = batch.x.shape[0]
        logits, z = self.encode_parts(batch.x)
        dev = z.device
        return [self.category_prior.sample(n, device=dev), self.prior.sample(n, device=dev)], [logits.softmax(1), z]

    def generator_penalty(self, batch: Batch, fake: list[Tensor]) -> Tensor | float:
        """λ_b·KL(q̄(y) || U(K)) = λ_b·Σ_k q̄_k log(K q̄_k), q̄ = the batch's mean of q(y|x)
        (``cluster_balance``), plus λ_c·mean KL(q(y|x') || q(y|x'')) over the batch, x'' a second
        corruption of each image and q(y|x') the encoded codes held fixed (``cluster_consistency``)."""
        c, q = self.config, fake[0]
        penalty = 0.0
        if c.cluster_balance:
            q_bar = q.mean(0)
            penalty = c.cluster_balance * torch.xlogy(q_bar, q_bar * q_bar.numel()).sum()
        if c.cluster_consistency:
            target = q.detach()
            log_q2 = self.encode_parts(batch.x)[0].log_softmax(1)
            kl = (torch.xlogy(target, target) - target * log_q2).sum(1).mean()
            penalty = penalty + c.cluster_consistency * kl
        return penalty

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.encode_parts(x)[0].softmax(1)

    # -- the semi-supervised classification phase

    def attach_data(self, splits: DataSplits) -> None:
        train = splits.train
        self._val = splits.val
        self._train = train
        augment = self._augments_labeled()
        if not self.uses_labels:  # clustering: labels, if any, only evaluate; K may differ from the classes
            if augment:
                raise ConfigError(f"model.{augment} needs labels; {self.config.type} here trains without them")
            self._labeled = None
            return
        if train.y is not None and (train.y >= self.config.num_classes).any():
            raise DataError(
                f"labels must lie in [-1, {self.config.num_classes}) for num_classes={self.config.num_classes}"
            )
        if augment and train.x.ndim != 4:
            raise ConfigError(
                f"model.{augment} transforms images; this data has samples of shape {tuple(train.x.shape[1:])}"
            )
        labeled = (train.y >= 0).nonzero().flatten() if train.y is not None else train.x.new_zeros(0).long()
        self._labeled = (train.x[labeled], train.y[labeled]) if len(labeled) else None

    def _augments_labeled(self) -> str:
        """The first labeled-batch augmentation set in the config ('' if none)."""
        c = self.config
        keys = ("label_shift", "label_rotation", "label_scale", "label_elastic")
        return next((k for k in keys if getattr(c, k)), "")

    _labeled: tuple[Tensor, Tensor] | None = None
    _val: ArrayDataset | None = None
    _train: ArrayDataset | None = None

    def classification_loss(self, batch: Batch) -> Tensor:
        x_l, y_l = self._labeled
        idx = torch.randint(len(y_l), (batch.x.shape[0],), device=y_l.device)
        x, c = x_l[idx], self.config
        if c.label_rotation or c.label_scale or self.label_elastic:
            x = random_affine(
                x, c.label_rotation, c.label_scale, elastic=self.label_elastic, elastic_sigma=c.label_elastic_sigma
            )
        if c.label_shift:
            x = random_shift(x, c.label_shift)
        return F.cross_entropy(self.encode_parts(x)[0], y_l[idx])

    def phases(self) -> list[Phase]:
        phases = super().phases()
        if self.uses_labels:
            if self._labeled is None:
                raise DataError(
                    "semi-supervised-aae needs labeled training samples (e.g. data.labels_per_class=10); "
                    "for no labels at all use clustering-aae"
                )
            head = [*self.trunk.parameters(), *self.y_head.parameters()]
            phases.append(Phase("semi_supervised", self.classification_loss, head))
        return self._register_phases(phases)

    # -- evaluation

    @torch.no_grad()
    def evaluate(self, data: ArrayDataset, batch_size: int = 1000) -> dict[str, float]:
        from regae.metrics import classification_error, hungarian_accuracy, majority_accuracy, nmi

        energy, probs = [], []
        for i in range(0, len(data), batch_size):
            x = data.x[i : i + batch_size]
            logits, z = self.encode_parts(x)
            energy.append(self.reconstruction_energy(x, self.decode(self.represent(logits.softmax(1), z))))
            probs.append(logits.softmax(1))
        q = torch.cat(probs)
        m = {"energy": torch.cat(energy).mean().item()}
        if data.y is not None and (data.y >= 0).any():
            assign = q.argmax(1)
            if self.uses_labels:
                m["error"] = classification_error(assign, data.y)
            else:
                m["hungarian_error"] = 100.0 - hungarian_accuracy(assign, data.y)
                m["nmi"] = nmi(assign, data.y)
                # many-to-one: each cluster labelled by its majority digit, steadier than §6's one image
                m["majority_error"] = 100.0 - majority_accuracy(assign, data.y)
                if self._val is not None and self._val.y is not None and data is not self._val:
                    from regae.metrics import cluster_log_odds, paper_cluster_error

                    # §6: each cluster takes the label of its most confident validation image, ranked by
                    # log-odds because float32 probabilities tie at 1 for hundreds of them
                    logits_val = self.cluster_logits(self._val.x, batch_size)
                    m["error"] = paper_cluster_error(cluster_log_odds(logits_val), self._val.y, q, data.y)
        return m

    @torch.no_grad()
    def cluster_logits(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """The logits of q(y|x), batch by batch."""
        return torch.cat([self.encode_parts(x[i : i + batch_size])[0] for i in range(0, len(x), batch_size)])

    @torch.no_grad()
    def report_sections(self, data: ArrayDataset) -> list[str]:
        """Without labels in training (§6 clustering, fig. 11c): one row per cluster on ``data``, its size,
        majority label and the label the §6 protocol gives it, so a report shows which clusters a single
        validation image mislabels."""
        if self.uses_labels or data.y is None or not (data.y >= 0).any():
            return []
        from regae.metrics import cluster_labels_paper, cluster_log_odds, cluster_table

        self.eval()
        k = self.config.num_classes
        assign = self.cluster_logits(data.x).argmax(1)
        paper = None
        if self._val is not None and self._val.y is not None and (self._val.y >= 0).any():
            paper = cluster_labels_paper(cluster_log_odds(self.cluster_logits(self._val.x)), self._val.y)
        rows = cluster_table(assign, data.y, k, paper)
        n = sum(r["size"] for r in rows)
        lines = ["## Clusters", ""]
        lines.append(
            f"{n:,} held-out images in {k} clusters ({sum(r['size'] == 0 for r in rows)} empty). *Majority*: the "
            "cluster's most frequent label and its share (majority-vote error). "
            + (
                "*§6 label*: the label of the cluster's most confident validation image (AAE §6); *lost*: the "
                "points of error the §6 label costs against the majority label."
                if paper is not None
                else "No labelled validation split, so no §6 labels."
            )
        )
        lines += ["", "| cluster | images | majority (share) |" + (" §6 label | lost |" if paper is not None else "")]
        lines.append("|---|---|---|" + ("---|---|" if paper is not None else ""))
        for r in rows:
            share = f"{r['majority']} ({100 * r['majority_count'] / r['size']:.1f} %)" if r["size"] else "—"
            line = f"| {r['cluster']} | {r['size']:,} | {share} |"
            if paper is not None:
                lost = 100 * (r["majority_count"] - r["paper_count"]) / n
                line += f" {r['paper_label']} | {lost:.2f} |" if lost else f" {r['paper_label']} | |"
            lines.append(line)
        if paper is not None:
            wrong = [r for r in rows if r["majority_count"] > r["paper_count"]]
            gap = 100 * sum(r["majority_count"] - r["paper_count"] for r in wrong) / n
            verb = "takes" if len(wrong) == 1 else "take"
            summary = f"{len(wrong)} of {k} clusters {verb} a §6 label other than their majority: {gap:.2f} points."
            lines += ["", summary]
        return [*lines, ""]

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        dev = next(self.parameters()).device
        y = self.categorical.sample(n, labels, device=dev)
        return self.mean(self.decode(self.represent(y, self.prior.sample(n, device=dev))))

    @torch.no_grad()
    def figures(self, data: ArrayDataset, out_dir: Path, *, name: str = ""):
        from regae import viz

        out_dir = Path(out_dir)
        figs = super().figures(data, out_dir, name=name)
        k, dev = self.config.num_classes, next(self.parameters()).device
        # fig. 9 / style-content: row i = cluster (or class) i; first column its head (z = 0), then members
        x = data.x[:5000]
        assign = torch.cat([self.predict_proba(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
        heads = self.mean(
            self.decode(self.represent(torch.eye(k, device=dev), torch.zeros(k, self.config.code_dim, device=dev)))
        )
        rows = []
        for i in range(k):
            members = x[assign == i][:9]
            pad = torch.zeros(9 - len(members), *self.input_shape, device=dev)
            rows.append(torch.cat([heads[i : i + 1], members, pad]))
        figs.append(
            (
                "Rows: categories; first column the head (z = 0), then test images assigned to it (fig. 9)",
                viz.image_grid(torch.cat(rows), out_dir / "cluster_heads.png", nrow=10),
            )
        )
        z = self.prior.sample(10, device=dev).repeat_interleave(k, 0)
        y = torch.eye(k, device=dev).repeat(10, 1)
        figs.append(
            (
                "Style (rows: z ~ prior) × category (columns)",
                viz.image_grid(self.mean(self.decode(self.represent(y, z))), out_dir / "style_content.png", nrow=k),
            )
        )
        if self._train is not None:
            figs.append(
                (
                    "Samples and their nearest training images (fig. 5)",
                    self.samples_with_neighbours(self._train, out_dir / "neighbours.png"),
                )
            )
        return figs


# ---------------------------------------------------------------------------------------- clustering


@dataclass
class ClusteringAAEConfig(SemiSupervisedAAEConfig):
    """Appendix A.3: 16 or 30 clusters, 5-D style, input dropout 20 %, batch norm in the encoder."""

    type: str = "clustering-aae"
    code_dim: int = 5
    num_classes: int = 16
    input_dropout: float = 0.2
    encoder_batchnorm: bool = True


@register_model("clustering-aae", help="§6: unsupervised clustering into K categories (no labels used)")
class ClusteringAAE(SemiSupervisedAAE):
    """The semi-supervised architecture without the classification phase; labels, if present, are used
    only for evaluation (§6 protocol: each cluster takes the label of its most confident validation image)."""

    config_class = ClusteringAAEConfig
    uses_labels = False
    schedulable = ("category_temperature",)  # no labeled batch to distort


# ------------------------------------------------------------------------------- dimensionality reduction


@dataclass
class DimReductionAAEConfig(SemiSupervisedAAEConfig):
    """§7: the representation is W_C·y + z in n = code_dim dimensions."""

    type: str = "aae-dim-reduction"
    code_dim: int = 2
    head_distance: float = 6.0  # η: heads closer than this are pushed apart (the paper does not give η)
    head_cost_weight: float = 1.0
    fixed_heads_scale: float | None = None  # §7 10-D: W_C = scale·I (needs num_classes == code_dim)
    use_labels: bool = True  # False: unsupervised (fig. 11c with 20 clusters)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fixed_heads_scale is not None and self.num_classes != self.code_dim:
            raise ConfigError("fixed_heads_scale (W_C = scale·I) needs num_classes == code_dim")
        if self.head_distance <= 0:
            raise ConfigError(f"model.head_distance must be > 0, got {self.head_distance}")


@register_model("aae-dim-reduction", help="§7: low-dimensional embedding W_C·y + z with learned cluster heads")
class DimReductionAAE(SemiSupervisedAAE):
    """Fig. 10: y (one-hot-ish, softmax) is mapped to a cluster head by W_C (m × n); the style z (n-D) is
    added; the decoder sees the n-D sum. The reconstruction phase also pays Σ_{i<j} max(0, η - ||w_i - w_j||)
    so the heads stay apart."""

    config_class = DimReductionAAEConfig

    @property
    def uses_labels(self) -> bool:  # type: ignore[override]
        return self.config.use_labels

    def build_heads(self, width: int) -> None:
        super().build_heads(width)
        c = self.config
        if c.fixed_heads_scale is not None:
            self.register_buffer("heads", c.fixed_heads_scale * torch.eye(c.num_classes))
        else:
            self.heads = nn.Parameter(
                build_prior("gaussian", c.code_dim, std=c.head_distance / 2).sample(c.num_classes)
            )

    def decoder_in_dim(self) -> int:
        return self.config.code_dim

    def represent(self, y_prob: Tensor, z: Tensor) -> Tensor:
        return y_prob @ self.heads + z

    def head_cost(self) -> Tensor:
        d = torch.pdist(self.heads) if isinstance(self.heads, nn.Parameter) else self.heads.new_zeros(1)
        return F.relu(self.config.head_distance - d).sum()

    def reconstruction_loss(self, batch: Batch):
        rec = super().reconstruction_loss(batch)
        if not isinstance(self.heads, nn.Parameter):
            return rec
        cost = self.head_cost()
        return rec + self.config.head_cost_weight * cost, {"energy": rec.detach(), "head_cost": cost.detach()}

    @torch.no_grad()
    def embedding_2d(self, x: Tensor) -> Tensor:
        """The representation, or for n > 2 its linear map sending the heads to a circle (fig. 11d)."""
        r = torch.cat([self.encode(x[i : i + 1000]) for i in range(0, len(x), 1000)])
        if r.shape[1] <= 2:
            return r
        k = self.config.num_classes
        angle = torch.arange(k, device=r.device) * (2 * math.pi / k)
        circle = torch.stack([angle.cos(), angle.sin()], 1) * self.heads.norm(dim=1).mean()
        proj = torch.linalg.lstsq(self.heads, circle).solution  # heads @ proj ≈ circle
        return r @ proj

    @torch.no_grad()
    def figures(self, data: ArrayDataset, out_dir: Path, *, name: str = ""):
        from regae import viz

        out_dir = Path(out_dir)
        figs = super().figures(data, out_dir, name=name)
        emb = self.embedding_2d(data.x[:5000])
        title = (
            "representation"
            if self.config.code_dim <= 2
            else f"{self.config.code_dim}-D representation, heads → circle"
        )
        figs.append(
            (
                f"Dimensionality reduction (fig. 11): {title}",
                viz.latent_scatter(
                    emb, out_dir / "embedding.png", labels=data.y[:5000] if data.y is not None else None, title=title
                ),
            )
        )
        return figs


__all__ = [
    "AAE",
    "SupervisedAAE",
    "SemiSupervisedAAE",
    "ClusteringAAE",
    "DimReductionAAE",
    "AAEConfig",
    "SupervisedAAEConfig",
    "SemiSupervisedAAEConfig",
    "ClusteringAAEConfig",
    "DimReductionAAEConfig",
]
