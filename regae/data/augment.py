"""Batch augmentations that run on the device, on whole minibatches (no per-sample Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Translate each image of ``x`` (N, C, H, W) by its own random integer offset in
    [-max_shift, max_shift]² pixels, filling with zeros: the classic MNIST augmentation.

    Done as one gather from the zero-padded batch, so it costs a copy of the batch.
    """
    if x.ndim != 4:
        raise ValueError(f"random_shift needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    if max_shift <= 0:
        return x
    n, c, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (2, n), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device) + off[0, :, None])[:, None, :, None]  # (N, 1, H, 1)
    cols = (torch.arange(w, device=x.device) + off[1, :, None])[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]
