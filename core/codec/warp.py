"""The global affine warp's resampling, in two interchangeable forms.

`F.grid_sample` (bilinear, border padding, align_corners=False) is what the decoder
renders with. Its CUDA backward accumulates with atomics, so a GPU encode that trains
through it is not reproducible, and PyTorch refuses it under deterministic algorithms.
`bilinear_border` computes the same resampling from four row gathers (`index_select`),
whose backward is an `index_add` that PyTorch makes deterministic on CUDA; the two agree
to float rounding (tests/core/codec/test_warp.py). The training engine uses the gather
form on CUDA and `grid_sample` on the CPU, where both are deterministic and
`grid_sample` is faster.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def sampling_grid(theta: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Normalised sampling positions (n, H, W, 2) of the affine maps `theta` (n, 2, 3)."""
    return F.affine_grid(theta, size, align_corners=False)


def grid_sample_border(frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The decoder's resampling (what every stream's frames are defined by)."""
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)


def bilinear_border(frames: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`grid_sample_border` from gathers: deterministic forward and backward on any device."""
    n, c, h, w = frames.shape
    ho, wo = grid.shape[1], grid.shape[2]
    # align_corners=False: -1 and 1 are the outer edges of the border pixels; border
    # padding clamps the source position into the frame (zero gradient outside, like
    # grid_sample's clip_coordinates).
    x = (((grid[..., 0] + 1) * w - 1) / 2).clamp(0, w - 1)
    y = (((grid[..., 1] + 1) * h - 1) / 2).clamp(0, h - 1)
    x0, y0 = x.detach().floor(), y.detach().floor()
    wx, wy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = (x0i + 1).clamp(max=w - 1), (y0i + 1).clamp(max=h - 1)
    rows = frames.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = (torch.arange(n, device=frames.device) * (h * w)).view(n, 1, 1)

    def tap(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return rows.index_select(0, (base + yi * w + xi).reshape(-1)).view(n, ho, wo, c)

    top = tap(y0i, x0i) * (1 - wx) + tap(y0i, x1i) * wx
    bottom = tap(y1i, x0i) * (1 - wx) + tap(y1i, x1i) * wx
    return (top * (1 - wy) + bottom * wy).permute(0, 3, 1, 2)
