"""scikit-learn's 8x8 handwritten digits: a tiny MNIST stand-in, bundled with scikit-learn (no download)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from regae.data.base import ArrayDataset, DataConfig, DataSplits
from regae.data.splits import finalize
from regae.registry import DATASETS


@DATASETS.register("digits", help="scikit-learn 8x8 digits (1797 images, grey levels 0..16 scaled to [0, 1])")
def digits(cfg: DataConfig) -> DataSplits:
    """The UCI optical digits of ``sklearn.datasets.load_digits``: 1797 images 1x8x8, 10 classes.

    Values 0..16 are divided by 16. The split is stratified by class and seeded by ``cfg.seed``:
    about 70% train, 15% validation, 15% test.
    """
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    labels = bunch.target
    train_idx, rest_idx = train_test_split(
        np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=cfg.seed
    )
    val_idx, test_idx = train_test_split(rest_idx, test_size=0.5, stratify=labels[rest_idx], random_state=cfg.seed)
    train, val, test = (ArrayDataset(x[i], y[i]) for i in map(torch.from_numpy, (train_idx, val_idx, test_idx)))
    splits = DataSplits("digits", train, val, test, num_classes=10, likelihood="bernoulli")
    return finalize(splits, cfg)
