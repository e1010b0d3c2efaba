"""2-D toy distributions, small enough to draw an autoencoder's energy over the whole plane.

Each is rescaled so that its clean points lie within about [-3, 3]^2; then Gaussian noise of std
``noise`` is added in those rescaled units (for the Gaussian mixtures it is the std of every component).

===============  ==============================================================  ==================
name             raw data                                                        rescaling
===============  ==============================================================  ==================
two-moons        scikit-learn's moons: x in [-1, 2], y in [-0.5, 1]              (p - (0.5, 0.25)) * 2
rings            3 concentric circles of radii 1, 2, 3                           * 0.9
swiss-roll       t (cos t, sin t), t in [1.5 pi, 4.5 pi] (|coordinates| <= 14.2)  / 5
gaussians-8      8 modes evenly spaced on a circle of radius 2                   none
gaussians-25     5 x 5 grid of modes at {-4, -2, 0, 2, 4}^2                       * 0.7
spirals          2 interleaved arms t (-cos t, sin t) and its negation, t <= 3 pi  * 0.3
===============  ==============================================================  ==================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from regae.data.base import ArrayDataset, DataConfig, DataSplits
from regae.data.splits import finalize
from regae.errors import ConfigError
from regae.registry import DATASETS, suggest

ToyGenerator = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray | None]]


def _two_moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
    x = np.where(y[:, None] == 0, upper, lower)
    return (x - [0.5, 0.25]) * 2, y


def _rings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    radii = np.array([1.0, 2.0, 3.0])
    # Rings drawn in proportion to their length, so the density along every ring is the same.
    y = rng.choice(len(radii), n, p=radii / radii.sum())
    t = rng.uniform(0, 2 * np.pi, n)
    x = radii[y, None] * np.stack([np.cos(t), np.sin(t)], 1)
    return x * 0.9, y


def _swiss_roll(rng: np.random.Generator, n: int) -> tuple[np.ndarray, None]:
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(0, 1, n))  # as sklearn.datasets.make_swiss_roll
    return np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5, None


def _gaussians_8(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 8, n)
    angle = y * (2 * np.pi / 8)
    return 2 * np.stack([np.cos(angle), np.sin(angle)], 1), y


def _gaussians_25(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 25, n)
    grid = np.stack([y // 5, y % 5], 1) * 2.0 - 4.0
    return grid * 0.7, y


def _spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi  # sqrt: fewer points near the crowded centre
    arm = np.stack([-t * np.cos(t), t * np.sin(t)], 1)
    sign = np.where(y == 0, 1.0, -1.0)[:, None]
    return arm * sign * 0.3, y


# name -> (generator, number of classes or None, one-line help)
TOYS: dict[str, tuple[ToyGenerator, int | None, str]] = {
    "two-moons": (_two_moons, 2, "2-D two interleaved half circles (labels: moon)"),
    "rings": (_rings, 3, "2-D three concentric circles (labels: ring)"),
    "swiss-roll": (_swiss_roll, None, "2-D swiss-roll spiral (unlabeled)"),
    "gaussians-8": (_gaussians_8, 8, "2-D mixture of 8 Gaussians on a circle of radius 2 (labels: mode)"),
    "gaussians-25": (_gaussians_25, 25, "2-D mixture of 25 Gaussians on a 5x5 grid (labels: mode)"),
    "spirals": (_spirals, 2, "2-D two interleaved spirals (labels: arm)"),
}


def sample_toy(name: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Draw ``n`` points of the 2-D toy distribution ``name``.

    Parameters
    ----------
    name : str
        One of "two-moons", "rings", "swiss-roll", "gaussians-8", "gaussians-25", "spirals".
    n : int
        Number of points.
    noise : float
        Std of the Gaussian noise added to every point, in the rescaled units of the module docstring.
    seed : int
        Seed of the numpy Generator; the same arguments always give the same points.

    Returns
    -------
    x : ndarray of shape (n, 2), float32
    y : ndarray of shape (n,), int64, or None
        The component (moon, ring, mode, arm) of each point; None for the swiss roll.
    """
    if name not in TOYS:
        hint = suggest(name, list(TOYS))
        raise ConfigError(f"unknown toy dataset {name!r}.{hint} Known: {', '.join(TOYS)}")
    if n < 1:
        raise ConfigError(f"the number of samples must be >= 1, got {n}")
    if noise < 0:
        raise ConfigError(f"noise is a standard deviation and must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    x, y = TOYS[name][0](rng, n)
    x = x + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), None if y is None else y.astype(np.int64)


def _derived_seed(seed: int, split: int) -> int:
    """An independent seed for split 1 (val) or 2 (test), so those never repeat the training points."""
    return int(np.random.SeedSequence([seed, split]).generate_state(1)[0])


def _make_loader(name: str) -> Callable[[DataConfig], DataSplits]:
    num_classes = TOYS[name][1]

    def load(cfg: DataConfig) -> DataSplits:
        if cfg.n_samples < 5:
            raise ConfigError(f"n_samples must be >= 5 (val and test get n_samples // 5), not {cfg.n_samples}")
        sizes_seeds = [
            (cfg.n_samples, cfg.seed),
            (cfg.n_samples // 5, _derived_seed(cfg.seed, 1)),
            (cfg.n_samples // 5, _derived_seed(cfg.seed, 2)),
        ]
        parts = []
        for n, seed in sizes_seeds:
            x, y = sample_toy(name, n, cfg.noise, seed)
            parts.append(ArrayDataset(torch.from_numpy(x), None if y is None else torch.from_numpy(y)))
        splits = DataSplits(name, *parts, num_classes=num_classes, likelihood="gaussian")
        return finalize(splits, cfg)

    load.__name__ = load.__qualname__ = name.replace("-", "_")
    load.__doc__ = f"{TOYS[name][2]}: n_samples train points, n_samples // 5 val and test points."
    return load


for _name, (_, _, _help) in TOYS.items():
    DATASETS.register(_name, help=_help)(_make_loader(_name))
