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


def random_affine(
    x: Tensor,
    rotation: float = 0.0,
    scale: float = 0.0,
    generator: torch.Generator | None = None,
    elastic: float = 0.0,
    elastic_sigma: float = 4.0,
) -> Tensor:
    """Rotate each image of ``x`` (N, C, H, W) about its centre by its own angle drawn uniformly from
    [-rotation, rotation] degrees and zoom it by a factor drawn uniformly from [1 - scale, 1 + scale]
    (bilinear, zeros outside): the small affine jitter of MNIST's augmented baselines.

    ``elastic`` > 0 adds Simard et al.'s (2003, §2) elastic distortion to the same warp: a per-pixel
    displacement field drawn uniformly from [-1, 1], smoothed by a Gaussian of std ``elastic_sigma`` pixels
    and scaled by ``elastic`` pixels (their MNIST setting: 34 and 4).

    One ``affine_grid`` + ``grid_sample`` over the whole batch, so the image is resampled once.
    """
    if x.ndim != 4:
        raise ValueError(f"random_affine needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    if not 0.0 <= scale < 1.0:
        raise ValueError(f"random_affine: scale must lie in [0, 1), got {scale}")
    if rotation < 0:
        raise ValueError(f"random_affine: rotation must be >= 0 degrees, got {rotation}")
    if elastic < 0:
        raise ValueError(f"random_affine: elastic must be >= 0 pixels, got {elastic}")
    if elastic and not elastic_sigma > 0:
        raise ValueError(f"random_affine: elastic_sigma must be > 0 pixels, got {elastic_sigma}")
    if rotation == 0 and scale == 0 and elastic == 0:
        return x
    n, _, h, w = x.shape
    # the draws of the affine part come first so that elastic=0 keeps the random stream of earlier runs
    u = torch.rand(2, n, device=x.device, generator=generator) * 2 - 1  # uniform in [-1, 1)
    angle = torch.deg2rad(torch.as_tensor(rotation, device=x.device)) * u[0]
    zoom = 1 + scale * u[1]
    cos, sin = angle.cos() / zoom, angle.sin() / zoom  # theta maps output to input coordinates: R(-a) / zoom
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if elastic:
        grid = grid + _elastic_field(n, h, w, elastic, elastic_sigma, x, generator)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_stroke_width(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Thicken or thin the strokes of each image of ``x`` (N, C, H, W) by its own random amount.

    Each image draws t uniformly from [-strength, strength] and moves towards its 3×3 grey-level dilation
    (the max over each pixel's neighbours, t > 0: bolder strokes) or its erosion (the min, t < 0: thinner),
    ``x + |t| · (morph(x) - x)``. With ``strength`` 1 the extremes are one pixel bolder or thinner on
    each side. Stroke width is a style of handwriting, like slant, that a digit's identity should not
    depend on. Two max-pools over the batch; values stay in the range of ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"random_stroke_width needs images of shape (N, C, H, W), got {tuple(x.shape)}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"random_stroke_width: strength must lie in [0, 1], got {strength}")
    if strength == 0:
        return x
    t = (torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator, dtype=x.dtype) * 2 - 1) * strength
    # max_pool2d pads with -inf, so neither morphology sees the padding as ink or as background
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    return x + t.clamp(min=0) * (thick - x) + (-t).clamp(min=0) * (thin - x)


def _gaussian_band(size: int, sigma: float, like: Tensor) -> Tensor:
    """(size, size) symmetric matrix B with B[i, j] = g(i - j), g a normalised Gaussian truncated at 3σ:
    ``B @ v`` blurs v along its first axis with zero padding."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=like.device, dtype=like.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    i = torch.arange(size, device=like.device)
    d = i[None, :] - i[:, None]
    return torch.where(d.abs() <= radius, k[(d + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=like.dtype))


def _elastic_field(
    n: int, h: int, w: int, alpha: float, sigma: float, like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """(N, H, W, 2) smoothed random displacements in grid_sample's [-1, 1] coordinates."""
    field = torch.rand(2 * n, 1, h, w, device=like.device, generator=generator, dtype=like.dtype) * 2 - 1
    # separable Gaussian blur with zero padding, as two products with banded matrices: B_h @ field @ B_w
    # (the same sums as two 1-D convolutions, about 10x faster than conv2d for a 25-tap kernel on 28x28)
    field = _gaussian_band(h, sigma, like) @ field.view(2 * n, h, w) @ _gaussian_band(w, sigma, like)
    field = field.view(n, 2, h, w)
    # pixels to normalised coordinates (align_corners=False: the image spans 2 units over W or H pixels)
    field = field * alpha
    return torch.stack([field[:, 0] * (2.0 / w), field[:, 1] * (2.0 / h)], -1)  # (N, H, W, [dx, dy])
