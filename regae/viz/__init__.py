"""Figures for run reports, written as PNG files (no windows, no pyplot state)."""

from regae.viz.plots import (
    energy_grid,
    energy_maps,
    image_grid,
    latent_scatter,
    manifold_grid,
    reconstruction_grid,
    training_curves,
)

__all__ = [
    "energy_grid",
    "energy_maps",
    "image_grid",
    "latent_scatter",
    "manifold_grid",
    "reconstruction_grid",
    "training_curves",
]
