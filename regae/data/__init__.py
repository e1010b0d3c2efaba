"""Datasets: MNIST, scikit-learn digits and 2-D toy distributions, as tensors split train / val / test.

Every dataset is a factory in :data:`regae.registry.DATASETS`, called by :func:`load_data`.
"""

from __future__ import annotations

# The dataset modules register themselves on import.
from regae.data import digits, mnist, toy  # noqa: F401
from regae.data.base import (
    ArrayDataset,
    DataConfig,
    DataSplits,
    batches_per_epoch,
    check_array,
    epoch_permutation,
    iterate_batches,
)
from regae.data.mnist import cache_dir, restricted_load
from regae.data.splits import bernoulli_transform, finalize, labeled_split, mask_unlabeled
from regae.data.toy import sample_toy
from regae.errors import DataError
from regae.registry import DATASETS

LIKELIHOODS = ("bernoulli", "gaussian")

__all__ = [
    "ArrayDataset",
    "DataConfig",
    "DataSplits",
    "batches_per_epoch",
    "bernoulli_transform",
    "cache_dir",
    "check_array",
    "epoch_permutation",
    "finalize",
    "iterate_batches",
    "labeled_split",
    "load_data",
    "mask_unlabeled",
    "restricted_load",
    "sample_toy",
]


def load_data(cfg: DataConfig) -> DataSplits:
    """Load the dataset ``cfg.name`` (on the CPU) and check that the splits agree with each other.

    Raises ConfigError for an unknown name (with a suggestion) and DataError for inconsistent data.
    """
    splits = DATASETS.get(cfg.name)(cfg)
    if not isinstance(splits, DataSplits):
        raise DataError(f"dataset {cfg.name!r} returned {type(splits).__name__}, not DataSplits")
    if splits.likelihood not in LIKELIHOODS:
        raise DataError(f"dataset {cfg.name!r} has likelihood {splits.likelihood!r}; expected one of {LIKELIHOODS}")
    for part in ("train", "val", "test"):
        ds = getattr(splits, part)
        if ds is None:
            continue
        if not isinstance(ds, ArrayDataset):
            raise DataError(f"{cfg.name} {part} split is {type(ds).__name__}, not ArrayDataset")
        if ds.shape != splits.train.shape:
            raise DataError(f"{cfg.name} {part} samples have shape {ds.shape} but train samples {splits.train.shape}")
        if splits.likelihood == "bernoulli" and (ds.x.min() < 0 or ds.x.max() > 1):
            raise DataError(f"{cfg.name} {part} has values outside [0, 1], as a Bernoulli likelihood needs")
        if splits.num_classes is not None and ds.y is not None:
            if ds.y.min() < -1 or ds.y.max() >= splits.num_classes:
                raise DataError(
                    f"{cfg.name} {part} labels span [{ds.y.min().item()}, {ds.y.max().item()}], "
                    f"outside -1..{splits.num_classes - 1}"
                )
    return splits
