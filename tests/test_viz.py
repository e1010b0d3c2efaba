"""Report figures: each writes a readable PNG, rejects malformed input; energy grids are oriented right."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from regae.viz import (
    energy_grid,
    energy_maps,
    image_grid,
    latent_scatter,
    manifold_grid,
    reconstruction_grid,
    training_curves,
)


def png_size(path: Path, lo: int = 150, hi: int = 2000) -> tuple[int, int]:
    """Assert ``path`` is a non-empty PNG whose sides lie in [lo, hi] pixels; return (height, width)."""
    assert path.is_file() and path.stat().st_size > 0
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert lo <= h <= hi and lo <= w <= hi, (h, w)
    assert img[..., :3].std() > 0  # not a blank canvas
    return h, w


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ------------------------------------------------------------------------------------------- image grids


@pytest.mark.parametrize(
    "shape, image_shape",
    [
        ((400, 1, 28, 28), None),
        ((10, 28, 28), None),
        ((12, 784), None),
        ((7, 3 * 8 * 8), (3, 8, 8)),
        ((5, 3, 16, 16), None),
    ],
)
def test_image_grid_shapes(tmp_path: Path, shape, image_shape) -> None:
    images = torch.rand(shape) * 1.4 - 0.2  # out of [0, 1] on purpose: must be clipped, not rejected
    out = image_grid(images, tmp_path / "sub" / "grid.png", title="samples", image_shape=image_shape)
    assert out == tmp_path / "sub" / "grid.png"
    png_size(out)


def test_image_grid_numpy_and_nrow(tmp_path: Path, rng: np.random.Generator) -> None:
    wide = png_size(image_grid(rng.random((8, 28, 28)), tmp_path / "wide.png", nrow=8))
    tall = png_size(image_grid(rng.random((8, 28, 28)), tmp_path / "tall.png", nrow=1))
    assert wide[1] > wide[0] and tall[0] > tall[1]


@pytest.mark.parametrize(
    "shape, image_shape",
    [((4, 10), None), ((4, 784), (27, 27)), ((4, 5, 8, 8), None), ((16,), None), ((0, 28, 28), None)],
)
def test_image_grid_bad_shapes(tmp_path: Path, shape, image_shape) -> None:
    with pytest.raises(ValueError):
        image_grid(np.zeros(shape), tmp_path / "bad.png", image_shape=image_shape)


def test_reconstruction_grid(tmp_path: Path) -> None:
    x = torch.rand(50, 1, 28, 28)
    png_size(reconstruction_grid(x, (x + 0.1 * torch.randn_like(x)).flatten(1), tmp_path / "rec.png", n=32))
    png_size(reconstruction_grid(x[:3], x[:3], tmp_path / "rec3.png", title="three"))  # n > N is fine
    with pytest.raises(ValueError, match="match"):
        reconstruction_grid(x, x[:10], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="match"):
        reconstruction_grid(x, torch.rand(50, 1, 14, 14), tmp_path / "bad.png")


def test_manifold_grid(tmp_path: Path) -> None:
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(torch.nn.Linear(2, 784), torch.nn.Sigmoid())
    png_size(manifold_grid(decoder, tmp_path / "manifold.png", n=20))
    png_size(manifold_grid(decoder, tmp_path / "points.png", n=3, points=torch.randn(9, 2)))
    with pytest.raises(ValueError, match="points"):
        manifold_grid(decoder, tmp_path / "bad.png", n=3, points=torch.randn(8, 2))


def test_manifold_grid_orientation(tmp_path: Path) -> None:
    """Top-left tile decodes (xmin, ymax), bottom-right tile decodes (xmax, ymin)."""
    seen = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        seen.append(z)
        return torch.zeros(len(z), 4 * 4)

    manifold_grid(decode, tmp_path / "m.png", extent=(-1, 1, -3, 3), n=5, image_shape=(4, 4))
    z = seen[0]
    assert z.shape == (25, 2)
    assert z[0].tolist() == [-1.0, 3.0] and z[-1].tolist() == [1.0, -3.0]


# ----------------------------------------------------------------------------------------------- latents


def test_latent_scatter_variants(tmp_path: Path, rng: np.random.Generator) -> None:
    z2 = rng.normal(size=(300, 2))
    labels = rng.integers(0, 10, size=300)
    png_size(latent_scatter(torch.tensor(z2), tmp_path / "a.png", labels=torch.tensor(labels), title="2-D"))
    png_size(latent_scatter(rng.normal(size=(8000, 16)), tmp_path / "pca.png", labels=rng.integers(0, 3, 8000)))
    png_size(latent_scatter(z2, tmp_path / "many.png", labels=rng.integers(0, 40, 300)))  # colorbar path
    semi = labels.copy()
    semi[::2] = -1  # unlabeled samples
    png_size(latent_scatter(z2, tmp_path / "semi.png", labels=semi))
    png_size(latent_scatter(z2, tmp_path / "nolabels.png", max_points=50))


def test_latent_scatter_deterministic_subsample(tmp_path: Path, rng: np.random.Generator) -> None:
    z = rng.normal(size=(3000, 2))
    a = latent_scatter(z, tmp_path / "a.png", max_points=500)
    b = latent_scatter(z, tmp_path / "b.png", max_points=500)
    assert np.array_equal(mpimg.imread(a), mpimg.imread(b))


@pytest.mark.parametrize(
    "z, labels", [(np.zeros((10, 1)), None), (np.zeros(10), None), (np.zeros((10, 2)), np.zeros(9))]
)
def test_latent_scatter_bad_shapes(tmp_path: Path, z, labels) -> None:
    with pytest.raises(ValueError):
        latent_scatter(z, tmp_path / "bad.png", labels=labels)


# ------------------------------------------------------------------------------------------ training log


def test_training_curves_with_empty_cells(tmp_path: Path) -> None:
    lines = ["step,phase,loss,recon,eval/loss,lr"]
    for step in range(0, 500, 10):
        lr = 1e-3 * 0.99**step  # spans > 2 decades: log axis
        lines.append(f"{step},train,{10 / (step + 1):.6f},{1 / (step + 1):.6f},,{lr:.3e}")
        if step % 100 == 0:
            lines.append(f"{step},eval,,,{5 / (step + 1):.6f},")
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    h, w = png_size(training_curves(csv_path, tmp_path / "curves.png", title="run"))
    assert w > h  # 4 metrics: 3 columns x 2 rows


def test_training_curves_errors(tmp_path: Path) -> None:
    no_step = tmp_path / "no_step.csv"
    no_step.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="step"):
        training_curves(no_step, tmp_path / "bad.png")
    only_text = tmp_path / "text.csv"
    only_text.write_text("step,phase\n1,train\n")
    with pytest.raises(ValueError, match="numeric"):
        training_curves(only_text, tmp_path / "bad.png")


# --------------------------------------------------------------------------------------------- energies


def test_energy_grid_orientation() -> None:
    extent = (-1.0, 1.0, -2.0, 2.0)
    ex = energy_grid(lambda p: p[:, 0], extent, resolution=30)
    ey = energy_grid(lambda p: p[:, 1], extent, resolution=30)
    assert ex.shape == ey.shape == (30, 30)
    assert np.all(np.diff(ex, axis=1) > 0) and np.allclose(np.diff(ex, axis=0), 0)  # x grows along columns
    assert np.all(np.diff(ey, axis=0) > 0) and np.allclose(np.diff(ey, axis=1), 0)  # y grows along rows
    assert ex[0, 0] == pytest.approx(-1) and ex[0, -1] == pytest.approx(1)
    assert ey[0, 0] == pytest.approx(-2) and ey[-1, 0] == pytest.approx(2)


def test_energy_grid_batches_and_no_grad() -> None:
    sizes = []

    def fn(p: torch.Tensor) -> torch.Tensor:
        assert p.dtype == torch.float32 and not torch.is_grad_enabled()
        sizes.append(len(p))
        return (p**2).sum(1, keepdim=True)  # (M, 1) is accepted too

    e = energy_grid(fn, (-1, 1, -1, 1), resolution=150)
    assert e.shape == (150, 150) and sizes == [10_000, 10_000, 2_500]
    with pytest.raises(ValueError, match="shape"):
        energy_grid(lambda p: p, (-1, 1, -1, 1), resolution=10)
    with pytest.raises(ValueError, match="extent"):
        energy_grid(lambda p: p[:, 0], (1, -1, -1, 1))


def test_energy_maps(tmp_path: Path, rng: np.random.Generator) -> None:
    extent = (-2.0, 2.0, -2.0, 2.0)
    data = rng.normal(scale=0.5, size=(5000, 2))
    panels = [
        {"title": "AE", "energy": energy_grid(lambda p: (p**2).sum(1), extent, 60), "extent": extent},
        {"title": "flat", "energy": 1e-4 + 1e-6 * rng.random((60, 60)), "extent": extent},
        {"title": "signed", "energy": torch.randn(40, 50), "extent": extent},
        {"title": "zeros", "energy": np.zeros((20, 20)), "extent": extent},
        {"title": "with nan", "energy": np.where(rng.random((30, 30)) > 0.1, 1.0, np.nan), "extent": extent},
    ]
    h, w = png_size(energy_maps(panels, tmp_path / "energy.png", data=data, title="energies"))
    assert w > h  # 5 panels, 4 per row
    png_size(energy_maps(panels[:1], tmp_path / "one.png", ncols=1))


@pytest.mark.parametrize(
    "panels, data",
    [
        ([], None),
        ([{"title": "x", "energy": np.zeros(10), "extent": (0, 1, 0, 1)}], None),
        ([{"title": "x", "energy": np.zeros((5, 5)), "extent": (0, 1, 0)}], None),
        ([{"title": "x", "energy": np.zeros((5, 5))}], None),
        ([{"title": "x", "energy": np.zeros((5, 5)), "extent": (0, 1, 0, 1)}], np.zeros((10, 3))),
    ],
)
def test_energy_maps_bad_input(tmp_path: Path, panels, data) -> None:
    with pytest.raises(ValueError):
        energy_maps(panels, tmp_path / "bad.png", data=data)


def test_no_pyplot_figures_left_open(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    image_grid(np.random.rand(4, 8, 8), tmp_path / "g.png")
    energy_maps([{"title": "e", "energy": np.ones((5, 5)), "extent": (0, 1, 0, 1)}], tmp_path / "e.png")
    assert plt.get_fignums() == before
