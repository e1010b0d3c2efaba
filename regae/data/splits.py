"""Post-processing shared by every dataset: subsetting, binarization, shifts and semi-supervised label masking."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from regae.data.augment import random_shift
from regae.data.base import ArrayDataset, DataConfig, DataSplits
from regae.errors import ConfigError, DataError

BINARIZE_MODES = ("none", "fixed", "stochastic")


def bernoulli_transform(x: Tensor) -> Tensor:
    """Stochastic binarization of a training batch: each value is replaced by a draw from Bernoulli(x).

    It draws from the global torch RNG (of ``x``'s device), so a run restored with its saved RNG state
    sees the same binarized batches.
    """
    return torch.bernoulli(x)


def labeled_split(y: Tensor, per_class: int, seed: int) -> Tensor:
    """Indices of a balanced, seeded labeled subset: ``per_class`` examples of every class.

    Parameters
    ----------
    y : Tensor of shape (N,)
        Integer labels; entries equal to -1 (already unlabeled) are never chosen.
    per_class : int
        Number of labeled examples to keep for each class present in ``y``.
    seed : int
        Seed of the choice; the same (y, per_class, seed) always gives the same indices.

    Returns
    -------
    Tensor of shape (n_classes * per_class,)
        Sorted int64 indices into ``y``.
    """
    if per_class < 1:
        raise ConfigError(f"labels_per_class must be >= 1, got {per_class}")
    y = y.cpu()
    classes = torch.unique(y[y >= 0])
    if classes.numel() == 0:
        raise DataError("cannot choose labeled examples: every label is -1 (unlabeled)")
    # One seeded permutation of all samples, then the first `per_class` of each class in that order.
    perm = torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(seed))
    chosen = []
    for c in classes.tolist():
        idx = perm[y[perm] == c]
        if idx.numel() < per_class:
            raise DataError(
                f"class {c} has only {idx.numel()} examples, fewer than labels_per_class={per_class}; "
                "lower labels_per_class (or raise limit)"
            )
        chosen.append(idx[:per_class])
    return torch.sort(torch.cat(chosen)).values


def mask_unlabeled(ds: ArrayDataset, per_class: int, seed: int) -> ArrayDataset:
    """A copy of ``ds`` with labels -1 except on a balanced labeled subset (see :func:`labeled_split`)."""
    if ds.y is None:
        raise DataError("labels_per_class needs a labeled dataset, but this one has no labels (y is None)")
    idx = labeled_split(ds.y, per_class, seed)
    y = torch.full_like(ds.y, -1)
    y[idx] = ds.y[idx]
    return ArrayDataset(ds.x, y)


def _binarize_fixed(ds: ArrayDataset | None, threshold: float) -> ArrayDataset | None:
    return None if ds is None else ArrayDataset((ds.x > threshold).float(), ds.y)


def _binarize_once(ds: ArrayDataset | None, generator: torch.Generator) -> ArrayDataset | None:
    return None if ds is None else ArrayDataset(torch.bernoulli(ds.x, generator=generator), ds.y)


def finalize(splits: DataSplits, cfg: DataConfig) -> DataSplits:
    """Apply ``cfg.limit``, ``cfg.binarize``, ``cfg.shift``, then ``cfg.labels_per_class`` to freshly loaded splits.

    Every dataset factory ends with this, so the options mean the same for all datasets.

    - ``limit``: keep the first ``limit`` training samples.
    - ``binarize="fixed"``: ``x > threshold`` on every split.
    - ``binarize="stochastic"``: training batches are resampled from Bernoulli(x) at every step (through
      ``splits.transform``); validation and test are binarized once, with a generator seeded by
      ``cfg.seed``, so evaluation is deterministic.
    - ``shift``: every training batch is randomly translated by up to ``shift`` pixels (images only).
    - ``labels_per_class``: the training labels are masked to -1 except ``labels_per_class`` per class.
    """
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or None for all samples), got {cfg.limit}")
        splits = replace(splits, train=splits.train.subset(torch.arange(min(cfg.limit, len(splits.train)))))

    if cfg.binarize not in BINARIZE_MODES:
        raise ConfigError(f"unknown binarize {cfg.binarize!r}; valid values: {', '.join(BINARIZE_MODES)}")
    if cfg.binarize != "none":
        lo, hi = splits.train.x.min().item(), splits.train.x.max().item()
        if lo < 0 or hi > 1:
            raise ConfigError(
                f"binarize={cfg.binarize!r} needs data in [0, 1], but {splits.name} spans "
                f"[{lo:.3g}, {hi:.3g}]; use binarize=none"
            )
    if cfg.binarize == "fixed":
        t = cfg.threshold
        splits = replace(
            splits,
            train=_binarize_fixed(splits.train, t),
            val=_binarize_fixed(splits.val, t),
            test=_binarize_fixed(splits.test, t),
        )
    elif cfg.binarize == "stochastic":
        g = torch.Generator().manual_seed(cfg.seed)
        splits = replace(
            splits,
            val=_binarize_once(splits.val, g),
            test=_binarize_once(splits.test, g),
            transform=bernoulli_transform,
        )

    if cfg.shift:
        if cfg.shift < 0:
            raise ConfigError(f"data.shift must be >= 0 pixels, got {cfg.shift}")
        if splits.train.x.ndim != 4:
            raise ConfigError(
                f"data.shift translates images; {splits.name} has samples of shape {tuple(splits.train.shape)}"
            )
        splits = replace(splits, transform=_then_shift(splits.transform, cfg.shift))

    if cfg.labels_per_class is not None:
        splits = replace(splits, train=mask_unlabeled(splits.train, cfg.labels_per_class, cfg.seed))
    return splits


def _then_shift(first: Callable[[Tensor], Tensor] | None, shift: int) -> Callable[[Tensor], Tensor]:
    """The training-batch transform: ``first`` (e.g. stochastic binarization), if any, then a random shift."""
    return lambda x: random_shift(x if first is None else first(x), shift)
