"""What every regularized autoencoder shares: config, energy, phases, evaluation, save/load.

The thesis' view (ch. 1-2): the reconstruction error of an autoencoder is an *energy* E(x); training
pulls it down on the data, and the regularizer (bottleneck, sparsity, noise, contraction, a prior)
keeps the volume of low energy small, so E is high away from the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regae.config import CONFIG_VERSION, check_choice, from_dict, migrate, to_dict
from regae.data.base import ArrayDataset, DataSplits, check_array
from regae.engine.checkpoint import read_folder, write_folder
from regae.engine.phase import Batch, Phase
from regae.errors import CheckpointError, ConfigError, DataError, NotGenerativeError
from regae.nn import build_decoder, build_encoder
from regae.registry import MODELS


@dataclass
class AutoencoderConfig:
    """Fields shared by all autoencoders. ``input_shape`` and ``likelihood`` come from the data."""

    type: str = "ae"
    input_shape: tuple[int, ...] | None = None
    likelihood: str | None = None  # "bernoulli" (BCE on logits) or "gaussian" (squared error / 2σ²)
    gaussian_std: float = 1.0  # σ of the Gaussian likelihood
    architecture: str = "mlp"  # "mlp" or "conv" (DCGAN-style, for images)
    hidden: tuple[int, ...] = (1000, 1000)  # MLP widths (conv: base channel count first)
    activation: str = "relu"
    code_dim: int = 32

    def __post_init__(self) -> None:
        if self.likelihood is not None:
            check_choice("model.likelihood", self.likelihood, ("bernoulli", "gaussian"))
        check_choice("model.architecture", self.architecture, ("mlp", "conv"))
        if self.code_dim < 1:
            raise ConfigError(f"model.code_dim must be >= 1, got {self.code_dim}")
        if self.gaussian_std <= 0:
            raise ConfigError(f"model.gaussian_std must be > 0, got {self.gaussian_std}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"model.hidden widths must be >= 1, got {list(self.hidden)}")


def register_model(name: str, help: str | None = None):
    """Register a model class under ``name`` (its config's ``type``)."""

    def deco(cls):
        cls.model_type = name
        return MODELS.register(name, help)(cls)

    return deco


def complete_config(config: AutoencoderConfig, splits: DataSplits) -> AutoencoderConfig:
    """Fill ``input_shape`` and ``likelihood`` from the data, refusing a config made for other data."""
    shape = tuple(splits.input_shape)
    if config.input_shape is not None and tuple(config.input_shape) != shape:
        raise DataError(
            f"the model expects inputs of shape {tuple(config.input_shape)} but dataset {splits.name!r} "
            f"has {shape}; remove model.input_shape or use matching data"
        )
    config.input_shape = shape
    if config.likelihood is None:
        config.likelihood = splits.likelihood
    return config


class Autoencoder(nn.Module):
    """Base class: an encoder, a decoder, a reconstruction energy and a list of training phases.

    Subclasses define ``phases()`` (the paper's algorithm) and may override ``regularizer``-style pieces.
    ``forward(batch, phase=name)`` runs one phase's loss, so the engine can call every phase through the
    same (DDP-wrapped) module.
    """

    config_class: ClassVar[type] = AutoencoderConfig
    model_type: ClassVar[str] = "ae"
    generative: ClassVar[bool] = False  # can `sample(n)` draw new data?
    schedulable: ClassVar[tuple[str, ...]] = ()  # hyperparameters a train.schedules entry may drive
    # DDP: True when some phase leaves parameters without gradient (e.g. adversarial phases)
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        if config.input_shape is None or config.likelihood is None:
            raise ConfigError("config.input_shape and config.likelihood must be set (complete_config fills them)")
        self.config = config
        self.input_shape = tuple(config.input_shape)
        self._phase_losses: dict[str, Any] = {}
        self.build_networks()

    def build_networks(self) -> None:
        """Create the encoder and decoder (subclasses with other parts override this)."""
        c = self.config
        self.encoder = build_encoder(c.architecture, self.input_shape, self.encoder_out_dim(), c.hidden, c.activation)
        self.decoder = build_decoder(c.architecture, c.code_dim, self.input_shape, c.hidden, c.activation)

    def attach_data(self, splits: DataSplits) -> None:
        """Called before training and evaluation with the (device) data; models that need more than the
        current minibatch (a labeled subset, the validation split) keep references here. Not saved."""

    # --------------------------------------------------------------------------- the autoencoder

    def encoder_out_dim(self) -> int:
        return self.config.code_dim

    def encode(self, x: Tensor) -> Tensor:
        """The code z = f(x) (deterministic; for a VAE, the posterior mean)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Decoder output before the output non-linearity (logits for Bernoulli data)."""
        return self.decoder(z)

    def mean(self, out: Tensor) -> Tensor:
        """Map decoder outputs to the data space (the likelihood's mean)."""
        return torch.sigmoid(out) if self.config.likelihood == "bernoulli" else out

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.mean(self.decode(self.encode(x)))

    def reconstruction_energy(self, x: Tensor, out: Tensor) -> Tensor:
        """Per-sample negative log-likelihood of ``x`` under the decoder output (constants dropped)."""
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            nll = 0.5 * (out - x).square() / self.config.gaussian_std**2
        return nll.flatten(1).sum(1)

    def energy(self, x: Tensor) -> Tensor:
        """E(x): the reconstruction energy of each sample, shape (N,). Low on the data, high off it."""
        return self.reconstruction_energy(x, self.decode(self.encode(x)))

    # ------------------------------------------------------------------------------- training

    def loss(self, batch: Batch) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The reconstruction phase's objective; regularized models add their penalty here."""
        return self.energy(batch.x).mean()

    def phases(self) -> list[Phase]:
        """The training algorithm: by default one "reconstruction" phase minimising :meth:`loss`."""
        return self._register_phases([Phase("reconstruction", self.loss, self.parameters())])

    def _register_phases(self, phases: list[Phase]) -> list[Phase]:
        self._phase_losses = {p.name: p.loss for p in phases}
        return phases

    def forward(self, batch: Batch, phase: str | None = None):
        if phase is None:
            return self.reconstruct(batch.x if isinstance(batch, Batch) else batch)
        if not self._phase_losses:
            self.phases()
        return self._phase_losses[phase](batch)

    # ----------------------------------------------------------------------------- evaluation

    def validate_input(self, x: Tensor) -> Tensor:
        check_array(x, "x")
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"{type(self).__name__} expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return x

    @torch.no_grad()
    def evaluate(self, data: ArrayDataset, batch_size: int = 1000) -> dict[str, float]:
        """Mean energy (reconstruction NLL) on ``data`` plus model-specific metrics, in one pass over it.

        A metric is averaged over the samples where it is defined: :meth:`eval_metrics` marks the others
        NaN (e.g. a label metric on unlabeled samples), and a metric defined nowhere is left out."""
        totals: dict[str, Tensor] = {}
        counts: dict[str, Tensor] = {}
        for i in range(0, len(data), batch_size):
            y = None if data.y is None else data.y[i : i + batch_size]
            for k, v in self.eval_metrics(data.x[i : i + batch_size], y).items():
                totals[k] = totals.get(k, 0) + v.nansum()
                counts[k] = counts.get(k, 0) + (~v.isnan()).sum()
        return {k: float(totals[k]) / int(counts[k]) for k in totals if int(counts[k])}

    def eval_metrics(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sample metrics of a batch (labels ``y`` if the data has them), averaged by :meth:`evaluate`."""
        return self.output_metrics(x, self.decode(self.encode(x)))

    def output_metrics(self, x: Tensor, out: Tensor) -> dict[str, Tensor]:
        """Per-sample energy of ``x`` under the decoder output ``out`` (and its squared error if Bernoulli)."""
        m = {"energy": self.reconstruction_energy(x, out)}
        if self.config.likelihood == "bernoulli":
            m["mse"] = (self.mean(out) - x).square().flatten(1).sum(1)
        return m

    def sample(self, n: int) -> Tensor:
        raise NotGenerativeError(
            f"{type(self).__name__} is not a generative model: it has no prior to sample codes from. "
            "Use a VAE (or an AAE) for `regae sample`."
        )

    # ------------------------------------------------------------------------------ save / load

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (atomically) to ``directory``."""
        meta = {"model_type": self.model_type, "config": to_dict(self.config), "config_version": CONFIG_VERSION}
        import regae

        meta["regae_version"] = regae.__version__
        return write_folder(
            Path(directory), self.state_dict(), meta, tensor_file="model.safetensors", state_file="config.json"
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Autoencoder:
        """Load a model written by :meth:`save_pretrained` (any registered type if called on the base)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a folder with config.json and model.safetensors")
        tensors, meta = read_folder(directory, tensor_file="model.safetensors", state_file="config.json")
        model_type = meta.get("model_type")
        if model_type not in MODELS:
            raise CheckpointError(f"{directory}/config.json names unknown model type {model_type!r}")
        model_cls = MODELS.get(model_type)
        if not issubclass(model_cls, cls):
            raise CheckpointError(f"{directory} holds a {model_type!r} model, not a {cls.__name__}")
        if not isinstance(meta.get("config"), dict):
            raise CheckpointError(f"{directory}/config.json has no 'config' mapping: not a regae model folder")
        try:
            # an older regae may have saved keys that were renamed or removed since (regae.config.migrate)
            saved = {"config_version": meta.get("config_version", 1), "model": {"type": model_type, **meta["config"]}}
            config = from_dict(model_cls.config_class, migrate(saved, f"{directory}/config.json")["model"], "config")
        except ConfigError as e:
            raise CheckpointError(f"{directory}/config.json is invalid: {e}") from None
        model = model_cls(config)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{directory}/model.safetensors does not match its config.json: {e}") from None
        return model.to(map_location).eval()

    # ------------------------------------------------------------------------------------ figures

    def report_sections(self, data: ArrayDataset) -> list[str]:
        """Markdown lines for the run's ``report.md`` beyond metrics and figures (e.g. a table per cluster),
        computed on held-out ``data``; none by default."""
        return []

    @torch.no_grad()
    def figures(self, data: ArrayDataset, out_dir: Path, *, name: str = "") -> list[tuple[str, Path]]:
        """Report figures on held-out ``data``: reconstructions, latent scatter, samples, energy map."""
        from regae import viz

        out_dir = Path(out_dir)
        figs: list[tuple[str, Path]] = []
        x = data.x[:2000]
        y = None if data.y is None else data.y[:2000]
        is_image = len(self.input_shape) == 3
        self.eval()
        if is_image:
            figs.append(
                (
                    "Reconstructions (odd rows: data, even rows: reconstruction)",
                    viz.reconstruction_grid(x[:32], self.reconstruct(x[:32]), out_dir / "reconstructions.png"),
                )
            )
        z = torch.cat([self.encode(x[i : i + 500]) for i in range(0, len(x), 500)])
        if z.shape[1] == 1:  # a 1-D code: show it against a constant second axis, spread by label
            z = torch.cat([z, torch.zeros_like(z) if y is None else y[:, None].float()], 1)
        figs.append(
            (
                "Codes of held-out data" + (" (PCA)" if z.shape[1] > 2 else ""),
                viz.latent_scatter(z, out_dir / "latent.png", labels=y, title=f"{name} codes"),
            )
        )
        if self.generative and is_image:
            figs.append(("Samples from the prior", viz.image_grid(self.sample(64), out_dir / "samples.png")))
        if len(self.input_shape) == 1 and self.input_shape[0] == 2:
            lo = x.min(0).values - 1.0
            hi = x.max(0).values + 1.0
            extent = (lo[0].item(), hi[0].item(), lo[1].item(), hi[1].item())
            grid = viz.energy_grid(self.energy, extent, resolution=120)
            figs.append(
                (
                    "Energy E(x) over the plane, data on top",
                    viz.energy_maps(
                        [{"title": name or self.model_type, "energy": grid, "extent": extent}],
                        out_dir / "energy.png",
                        data=x,
                    ),
                )
            )
        return figs
