"""regae: regularized autoencoders, trained by one generic engine, with honest reproductions.

Quick start::

    from regae import load_experiment, train, Autoencoder
    cfg = load_experiment("dae-mnist", ["epochs=1"])
    run_dir = train(cfg)
    model = Autoencoder.from_pretrained(run_dir / "model")
    energy = model.energy(x)            # E(x): low on the data, high elsewhere
"""

__version__ = "0.1.0"

from regae import models  # noqa: E402,F401  (registers the models)
from regae.config import ExperimentConfig, OptimConfig, TrainConfig, load_experiment  # noqa: E402
from regae.data import DataConfig, load_data  # noqa: E402
from regae.engine import Batch, Phase, Trainer  # noqa: E402
from regae.models import AE, CAE, DAE, VAE, Autoencoder, BetaVAE, KSparseAE, SparseAE  # noqa: E402
from regae.registry import DATASETS, MODELS, PRIORS  # noqa: E402
from regae.run import evaluate, resume, sample, train  # noqa: E402

__all__ = [
    "AE",
    "CAE",
    "DAE",
    "VAE",
    "BetaVAE",
    "KSparseAE",
    "SparseAE",
    "Autoencoder",
    "ExperimentConfig",
    "TrainConfig",
    "OptimConfig",
    "DataConfig",
    "Batch",
    "Phase",
    "Trainer",
    "DATASETS",
    "MODELS",
    "PRIORS",
    "load_experiment",
    "load_data",
    "train",
    "resume",
    "evaluate",
    "sample",
]
