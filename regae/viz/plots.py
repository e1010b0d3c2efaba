"""PNG figures for run reports: image grids, latent scatters, training curves and energy maps.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas directly, never through
pyplot: no window can open, the caller's backend choice is left alone, and no figure stays registered in
pyplot's global state after a function returns.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from regae.errors import DataError

DPI = 120
PAD_VALUE = 1.0  # white 1-px lines between tiles: MNIST-like digits have a black background
ENERGY_CMAP = "viridis"  # perceptually uniform, dark where the energy is low (where the data should be)

ArrayLike = Any  # torch.Tensor, np.ndarray or anything np.asarray accepts

__all__ = [
    "energy_grid",
    "energy_maps",
    "image_grid",
    "latent_scatter",
    "manifold_grid",
    "reconstruction_grid",
    "training_curves",
]


# ----------------------------------------------------------------------------------------------- helpers


def _to_numpy(x: ArrayLike, name: str = "input") -> np.ndarray:
    """Tensor or array-like -> float64 numpy array (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
        x = x.numpy()
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _as_images(images: ArrayLike, image_shape: Sequence[int] | None = None, name: str = "images") -> np.ndarray:
    """Bring (N, C, H, W), (N, H, W) or flat (N, D) images to (N, H, W, C) in [0, 1] with C in {1, 3, 4}."""
    x = _to_numpy(images, name)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{name} is empty: got shape {x.shape}")
    n = x.shape[0]
    if x.ndim == 2:
        d = x.shape[1]
        if image_shape is None:
            side = math.isqrt(d)
            if side * side != d:
                raise DataError(
                    f"{name} are flat with D={d}, not a perfect square: pass image_shape=(H, W) or (C, H, W)"
                )
            image_shape = (side, side)
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or math.prod(shape) != d:
            raise DataError(f"image_shape {shape} does not match flat images of size D={d} (need H*W or C*H*W = D)")
        x = x.reshape(n, *shape)
    elif image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape) and x[0].size == math.prod(image_shape):
        x = x.reshape(n, *image_shape)  # e.g. (N, 784, 1) decoder outputs
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{name} must have shape (N, C, H, W), (N, H, W) or (N, D), got {x.shape}")
    if x.shape[1] not in (1, 3, 4):
        raise DataError(f"{name} must have 1, 3 or 4 channels (N, C, H, W), got C={x.shape[1]} in shape {x.shape}")
    x = np.nan_to_num(x, nan=0.0)
    return np.clip(x, 0.0, 1.0).transpose(0, 2, 3, 1)


def _tile(images: np.ndarray, ncol: int) -> np.ndarray:
    """Tile (N, H, W, C) images into one (rows*(H+1)+1, ncol*(W+1)+1, C) array with 1-px padding.

    Done in numpy so that hundreds of tiles cost one ``imshow`` instead of one Axes each.
    """
    n, h, w, c = images.shape
    ncol = max(1, min(int(ncol), n))
    nrow = math.ceil(n / ncol)
    grid = np.full((nrow * (h + 1) + 1, ncol * (w + 1) + 1, c), PAD_VALUE)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = images[i]
    return grid


def _grid_figure(grid: np.ndarray, title: str | None) -> tuple[Figure, Any]:
    """A figure whose size follows the tiled image's aspect (longest side 7 in) with the image on one Axes."""
    h, w = grid.shape[:2]
    scale = 7.0 / max(h, w)
    fig = Figure(figsize=(max(w * scale, 2.5), max(h * scale, 2.5) + (0.4 if title else 0.0)), layout="constrained")
    ax = fig.add_subplot()
    if grid.shape[2] == 1:
        ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return fig, ax


# ------------------------------------------------------------------------------------------- image grids


def image_grid(
    images: ArrayLike,
    path: str | Path,
    *,
    nrow: int | None = None,
    title: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Tile images (N, C, H, W), (N, H, W) or flat (N, D) into one PNG; ``nrow`` images per row.

    Values are clipped to [0, 1]; one channel is shown in grayscale. Flat images need ``image_shape`` unless D
    is a perfect square. ``nrow`` defaults to ceil(sqrt(N)).
    """
    x = _as_images(images, image_shape)
    if nrow is not None and nrow < 1:
        raise DataError(f"nrow must be >= 1, got {nrow}")
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(len(x)))
    fig, _ = _grid_figure(_tile(x, ncol), title)
    return _save(fig, path)


def reconstruction_grid(
    originals: ArrayLike,
    reconstructions: ArrayLike,
    path: str | Path,
    *,
    n: int = 32,
    title: str | None = None,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """The first ``n`` originals and their reconstructions, in alternating rows (originals, then recons)."""
    orig = _as_images(originals, image_shape, "originals")
    recon = _as_images(reconstructions, image_shape, "reconstructions")
    if orig.shape[0] != recon.shape[0] or orig.shape[1:3] != recon.shape[1:3]:
        raise DataError(
            f"originals and reconstructions must match in count and image size, got {orig.shape[:3]} "
            f"and {recon.shape[:3]} (N, H, W)"
        )
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if orig.shape[3] != recon.shape[3]:  # e.g. grayscale input, RGB output: show both in RGB
        orig, recon = (np.broadcast_to(a, (*a.shape[:3], 3)) if a.shape[3] == 1 else a[..., :3] for a in (orig, recon))
    orig, recon = orig[:n], recon[:n]
    k = len(orig)
    ncol = min(k, math.ceil(math.sqrt(2 * k)))  # pairs of rows make a roughly square picture
    npairs = math.ceil(k / ncol)
    blank = np.full((ncol * npairs - k, *orig.shape[1:]), PAD_VALUE)
    orig, recon = np.concatenate([orig, blank]), np.concatenate([recon, blank])
    rows = []
    for p in range(npairs):
        rows += [orig[p * ncol : (p + 1) * ncol], recon[p * ncol : (p + 1) * ncol]]
    fig, ax = _grid_figure(_tile(np.concatenate(rows), ncol), title or "Originals and reconstructions")
    h = orig.shape[1] + 1
    ax.set_yticks([1 + h * r + h / 2 for r in range(2 * npairs)], ["orig", "recon"] * npairs, fontsize=8)
    ax.tick_params(axis="y", length=0)
    return _save(fig, path)


def manifold_grid(
    decode: Callable[[torch.Tensor], torch.Tensor],
    path: str | Path,
    *,
    extent: tuple[float, float, float, float] = (-2, 2, -2, 2),
    n: int = 20,
    image_shape: Sequence[int] = (28, 28),
    title: str | None = None,
    points: ArrayLike | None = None,
    device: str | torch.device | None = None,
) -> Path:
    """Decode an n x n grid of 2-D codes over ``extent`` (or given (n*n, d) ``points``) and tile the images.

    On the regular grid, columns go left to right along z1 and rows bottom to top along z2, so the picture
    reads like the latent plane. ``device`` is where the codes are sent before ``decode``.
    """
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if points is None:
        xmin, xmax, ymin, ymax = _check_extent(extent)
        xs = np.linspace(xmin, xmax, n)
        ys = np.linspace(ymax, ymin, n)  # top row = largest z2
        zx, zy = np.meshgrid(xs, ys)
        z = torch.tensor(np.stack([zx.ravel(), zy.ravel()], axis=1), dtype=torch.float32)
    else:
        z = torch.as_tensor(_to_numpy(points, "points"), dtype=torch.float32)
        if z.ndim != 2 or z.shape[0] != n * n:
            raise DataError(f"points must have shape (n*n, d) = ({n * n}, d) for n={n}, got {tuple(z.shape)}")
    if device is not None:
        z = z.to(device)
    with torch.no_grad():
        out = decode(z)
    x = _as_images(out, image_shape, "decoded images")
    if len(x) != n * n:
        raise DataError(f"decode returned {len(x)} images for {n * n} codes")
    fig, ax = _grid_figure(_tile(x, n), title or ("Decoded latent grid" if points is None else "Decoded codes"))
    if points is None:
        ax.set_xlabel(f"z1 from {extent[0]:g} to {extent[1]:g}")
        ax.set_ylabel(f"z2 from {extent[2]:g} (bottom) to {extent[3]:g} (top)")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------- latents


def latent_scatter(
    z: ArrayLike,
    path: str | Path,
    *,
    labels: ArrayLike | None = None,
    title: str | None = None,
    max_points: int = 5000,
) -> Path:
    """Scatter 2-D codes (N, 2), or the first two principal components of (N, d>2) codes, coloured by label.

    Up to 10 classes get tab10 colours and a legend, more get a colorbar; label -1 (unlabeled) is drawn grey.
    At most ``max_points`` points are drawn, subsampled with a fixed seed so reruns give the same picture.
    """
    codes = _to_numpy(z, "z")
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] < 2:
        raise DataError(f"z must have shape (N, d) with N >= 1 and d >= 2, got {codes.shape}")
    y = None
    if labels is not None:
        y = _to_numpy(labels, "labels")
        if y.shape != (codes.shape[0],):
            raise DataError(f"labels must have shape ({codes.shape[0]},) to match z, got {y.shape}")
    if max_points < 1:
        raise DataError(f"max_points must be >= 1, got {max_points}")

    xlabel, ylabel = "z1", "z2"
    if codes.shape[1] > 2:
        from sklearn.decomposition import PCA  # imported lazily: only needed for d > 2

        pca = PCA(n_components=2).fit(codes)
        codes = pca.transform(codes)
        ev = pca.explained_variance_ratio_ * 100
        d = pca.n_features_in_
        xlabel, ylabel = f"PC1 of {d}-D codes ({ev[0]:.0f}% var.)", f"PC2 of {d}-D codes ({ev[1]:.0f}% var.)"

    if len(codes) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(codes), max_points, replace=False))
        codes = codes[keep]
        y = y[keep] if y is not None else None

    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    size = 12 if len(codes) < 2000 else 4
    if y is None:
        ax.scatter(codes[:, 0], codes[:, 1], s=size, alpha=0.6, linewidths=0)
    else:
        unlabeled = y < 0
        if unlabeled.any():
            ax.scatter(*codes[unlabeled].T, s=size, c="lightgray", alpha=0.5, linewidths=0, label="unlabeled")
        codes, y = codes[~unlabeled], y[~unlabeled]
        classes = np.unique(y)
        if len(classes) <= 10 and np.all(classes == np.round(classes)):
            colors = colormaps["tab10"].colors
            for i, c in enumerate(classes):
                m = y == c
                ax.scatter(*codes[m].T, s=size, color=colors[i], alpha=0.7, linewidths=0, label=f"{int(c)}")
            ax.legend(title="label", markerscale=2.5 if size < 10 else 1.5, fontsize=8, loc="best", framealpha=0.8)
        else:
            sc = ax.scatter(*codes.T, s=size, c=y, cmap="viridis", alpha=0.7, linewidths=0)
            fig.colorbar(sc, ax=ax, label="label")
            if unlabeled.any():
                ax.legend(fontsize=8, loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Latent codes")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ training log


def _read_metrics_csv(metrics_csv: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Read ``step`` and every numeric column; empty cells become NaN, non-numeric columns are skipped."""
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "step" not in fields:
            raise DataError(f"{metrics_csv}: the CSV header must have a 'step' column, got {fields}")
        rows = [r for r in reader if (r.get("step") or "").strip()]
    if not rows:
        raise DataError(f"{metrics_csv}: no rows with a step value")

    def parse(cell: str | None) -> float | None:
        cell = (cell or "").strip()
        if not cell:
            return math.nan
        try:
            return float(cell)
        except ValueError:
            return None  # text, e.g. a 'phase' column

    raw_steps = [parse(r["step"]) for r in rows]
    if any(s is None for s in raw_steps):
        raise DataError(f"{metrics_csv}: the 'step' column must be numeric")
    steps = np.array(raw_steps, dtype=float)
    columns: dict[str, np.ndarray] = {}
    for name in fields:
        if name == "step" or name is None:
            continue
        values = [parse(r.get(name)) for r in rows]
        if any(v is None for v in values):
            continue
        col = np.array(values, dtype=float)
        if np.isfinite(col).any():
            columns[name] = col
    return steps, columns


def training_curves(metrics_csv: str | Path, path: str | Path, *, title: str | None = None) -> Path:
    """Plot every numeric column of a metrics CSV against ``step``, one subplot per column.

    Empty cells are skipped per column (train and eval rows are logged at different steps). A subplot uses a
    log y-axis when all its values are positive and span more than two orders of magnitude.
    """
    steps, columns = _read_metrics_csv(metrics_csv)
    if not columns:
        raise DataError(f"{metrics_csv}: no numeric metric columns besides 'step'")

    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.8 * nrows + (0.3 if title else 0.0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, values) in zip(axes, columns.items(), strict=False):
        ok = np.isfinite(values) & np.isfinite(steps)
        s, v = steps[ok], values[ok]
        order = np.argsort(s, kind="stable")
        ax.plot(s[order], v[order], marker="o" if len(v) <= 30 else None, markersize=3, linewidth=1.2)
        if np.all(v > 0) and v.max() / v.min() > 100:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------- energies


def _check_extent(extent: Sequence[float]) -> tuple[float, float, float, float]:
    if len(extent) != 4:
        raise DataError(f"extent must be (xmin, xmax, ymin, ymax), got {extent!r}")
    xmin, xmax, ymin, ymax = (float(e) for e in extent)
    if not (xmin < xmax and ymin < ymax):
        raise DataError(f"extent must have xmin < xmax and ymin < ymax, got {extent!r}")
    return xmin, xmax, ymin, ymax


def energy_grid(
    fn: Callable[[torch.Tensor], torch.Tensor],
    extent: tuple[float, float, float, float],
    resolution: int = 100,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 10_000,
) -> np.ndarray:
    """Evaluate ``fn(points (M, 2) float32) -> (M,)`` on a resolution x resolution grid over ``extent``.

    Returns a (resolution, resolution) array with rows indexed by y (row 0 = ymin) and columns by x, as
    ``imshow(..., origin="lower", extent=extent)`` and :func:`energy_maps` expect. Points go to ``device``.
    """
    xmin, xmax, ymin, ymax = _check_extent(extent)
    if resolution < 2:
        raise DataError(f"resolution must be >= 2, got {resolution}")
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution))
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32)
    out = []
    with torch.no_grad():
        for batch in points.split(batch_size):
            e = fn(batch.to(device) if device is not None else batch)
            e = torch.as_tensor(e)
            if e.numel() != len(batch) or (e.ndim > 1 and e.shape != (len(batch), 1)):
                raise DataError(f"fn must return shape (M,) for M={len(batch)} points, got {tuple(e.shape)}")
            out.append(e.reshape(-1).float().cpu())
    return torch.cat(out).numpy().reshape(resolution, resolution)


def energy_maps(
    panels: Sequence[dict],
    path: str | Path,
    *,
    data: ArrayLike | None = None,
    title: str | None = None,
    ncols: int | None = None,
    shared_scale: bool = False,
) -> Path:
    """Energy heat maps E(x) over a 2-D plane, one panel per model, with the training ``data`` (N, 2) on top.

    Each panel is ``{"title": str, "energy": (H, W) array with rows indexed by y, "extent": (xmin, xmax, ymin,
    ymax)}`` (see :func:`energy_grid`). Non-negative energies are shown as log(1 + E) with colour limits
    [0, max] per panel, so an everywhere-low energy reads as flat instead of its tiny variations being
    stretched over the whole colormap. Energies with negative values fall back to a linear [min, max] scale.
    With ``shared_scale`` every non-negative panel uses one colour scale, [0, the largest panel's 99th
    percentile of log(1 + E)]: energies in the same units become comparable across models, and a model whose
    energy is ~0 everywhere shows as uniformly dark.
    """
    if not isinstance(panels, Sequence) or isinstance(panels, (str, bytes)) or len(panels) == 0:
        raise DataError("panels must be a non-empty list of dicts with keys 'title', 'energy', 'extent'")
    checked = []
    for i, p in enumerate(panels):
        if not isinstance(p, dict) or "energy" not in p or "extent" not in p:
            raise DataError(f"panels[{i}] must be a dict with keys 'title', 'energy' and 'extent'")
        e = _to_numpy(p["energy"], f"panels[{i}]['energy']")
        if e.ndim != 2 or min(e.shape) < 1:
            raise DataError(f"panels[{i}]['energy'] must be a 2-D (H, W) array, got shape {e.shape}")
        if not np.isfinite(e).any():
            raise DataError(f"panels[{i}]['energy'] has no finite values")
        checked.append((str(p.get("title", f"model {i}")), e, _check_extent(p["extent"])))
    pts = None
    if data is not None:
        pts = _to_numpy(data, "data")
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise DataError(f"data must have shape (N, 2), got {pts.shape}")
        if len(pts) > 3000:  # enough to show the data's shape without hiding the energy underneath
            pts = pts[np.sort(np.random.default_rng(0).choice(len(pts), 3000, replace=False))]
    if ncols is not None and ncols < 1:
        raise DataError(f"ncols must be >= 1, got {ncols}")

    shared_vmax = None
    if shared_scale:
        tops = [np.nanpercentile(np.log1p(e[np.isfinite(e)]), 99) for _, e, _ in checked if np.nanmin(e) >= 0]
        shared_vmax = max(max(tops), 1e-12) if tops else None

    ncols = min(ncols or 4, len(checked))
    nrows = math.ceil(len(checked) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows + (0.3 if title else 0.0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, e, extent) in zip(axes, checked, strict=False):
        emin, emax = float(np.nanmin(e[np.isfinite(e)])), float(np.nanmax(e[np.isfinite(e)]))
        shown = np.where(np.isfinite(e), e, np.nan)
        if emin >= 0:
            shown = np.log1p(shown)
            if shared_vmax is not None:
                vmin, vmax, label = 0.0, shared_vmax, "log(1 + E), scale shared by all panels"
            else:
                vmin, vmax, label = 0.0, max(float(np.nanmax(shown)), 1e-12), "log(1 + E), scale [0, max]"
        else:
            vmin, vmax, label = emin, emax if emax > emin else emin + 1e-12, "E (linear, [min, max])"
        im = ax.imshow(
            shown,
            origin="lower",
            extent=extent,
            cmap=ENERGY_CMAP,
            vmin=vmin,
            vmax=vmax,
            aspect="auto",
            interpolation="bilinear",
        )
        cbar = fig.colorbar(im, ax=ax, shrink=0.9)
        cbar.set_label(label, fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        if pts is not None:
            ax.scatter(pts[:, 0], pts[:, 1], s=3, c="white", edgecolors="black", linewidths=0.2, alpha=0.5)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
        ax.set_title(f"{name}\nE in [{emin:.3g}, {emax:.3g}]", fontsize=9)
        ax.set_xlabel("x1", fontsize=8)
        ax.set_ylabel("x2", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(checked) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
