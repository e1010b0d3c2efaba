"""Model families; importing this module registers them all in ``regae.registry.MODELS``."""

from regae.models.aae import AAE, ClusteringAAE, DimReductionAAE, SemiSupervisedAAE, SupervisedAAE
from regae.models.ae import AE, CAE, DAE, KSparseAE, SparseAE
from regae.models.base import Autoencoder, AutoencoderConfig, complete_config, register_model
from regae.models.vae import VAE, BetaVAE

__all__ = [
    "AAE",
    "SupervisedAAE",
    "SemiSupervisedAAE",
    "ClusteringAAE",
    "DimReductionAAE",
    "AE",
    "CAE",
    "DAE",
    "KSparseAE",
    "SparseAE",
    "VAE",
    "BetaVAE",
    "Autoencoder",
    "AutoencoderConfig",
    "complete_config",
    "register_model",
]
