"""Global motion search for the warp backbone: where the previous clip's content went.

A P-model starts from its predecessor, whose frames show the scene where the camera left
it. Before training, the encoder registers those frames to the new clip: it fits only the
warp (Tg x 6 affine offsets) so that the start model's frames, warped, match the clip,
coarse to fine so that motions of many pixels are found. The finding decides whether the
P-model's warp trains (full learning rate, from the held pose) or stays frozen: trained
on a still camera the warp random-walks under Adam and blurs the frames, frozen on a
turning camera the decoder must re-fit the whole scene (both measured in
docs/method.md). Like block motion search in a classic encoder, this runs only in the
encoder; what reaches the stream is the quantised warp residual.

Hand-rolled rather than OpenCV's findTransformECC: the warp must be exactly the model's
(affine_grid/grid_sample in normalised coordinates, slot interpolation), and OpenCV is not
otherwise a dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from core.codec.adam import FusedAdam
from core.codec.model import BackboneConfig, GridWarpNeRV, build_model
from core.codec.render import RENDER_BATCH, clip_times
from core.codec.warmstart import Params
from core.codec.warp import bilinear_border, grid_sample_border

# The camera counts as moving when the best warp moves a corner by MOTION_PX or more and
# removes at least MIN_GAIN of the start model's error on the clip.
MOTION_PX = 2.0
MIN_GAIN = 0.3
WORK_WIDTH = 256  # the search runs on frames pooled to about this width or less
SCALES = (4, 2, 1)  # further average-pooling factors, coarse to fine
STEPS_PER_SCALE = 30
SEARCH_FRAMES = 8  # frames of the clip the search looks at, evenly spaced
LR = 1e-2


@dataclass(frozen=True)
class Motion:
    corner_px: float  # the best warp's largest corner displacement from the start's, in px
    mse_still: float  # start model vs the clip (at the search's size), with the start's warp
    mse_moved: float  # ... with the found warp
    variance: float = 0.0  # the clip's own variance at that size: the error of a flat frame

    @property
    def explained(self) -> float:
        """R^2 of the start as a predictor of the clip (best warp): 1 is perfect, 0 no
        better than a flat frame of the clip's mean colour, below 0 worse than that."""
        return 1.0 - self.mse_moved / self.variance if self.variance > 0 else 1.0

    @property
    def gain(self) -> float:
        """The fraction of the start's error the found warp removes."""
        return 1.0 - self.mse_moved / self.mse_still if self.mse_still > 0 else 0.0

    @property
    def moving(self) -> bool:
        return self.corner_px >= MOTION_PX and self.gain >= MIN_GAIN


def search_warp(
    cfg: BackboneConfig,
    start: Params,
    target: torch.Tensor,
    clip_length: int,
    device: torch.device,
) -> Motion:
    """How far the warp (Tg x 6) that best aligns the start model's frames to `target`
    ((n, 3, H, W) floats in [0, 1]) moves from the start's own, and what it explains.
    For a backbone without a warp: only how well the start's frames predict the clip."""
    model = build_model(cfg).to(device)
    weights = {n: torch.from_numpy(v).to(device) for n, v in start.items()}
    model.load_state_dict(weights, strict=True)
    unwarped = model.unwarped if isinstance(model, GridWarpNeRV) else model
    # A global motion shows in a few frames: the search sees at most SEARCH_FRAMES of the
    # clip, evenly spaced (with the WORK_WIDTH bound this keeps it under ~10 % of a fast
    # clip's encode, docs/method.md).
    pick = torch.from_numpy(
        np.unique(np.linspace(0, len(target) - 1, SEARCH_FRAMES).round().astype(np.int64))
    ).to(device)
    target = target.index_select(0, pick)
    times = clip_times(int(pick.max()) + 1, clip_length).to(device).index_select(0, pick)
    # Detecting and sizing a global motion needs no more than ~WORK_WIDTH pixels across:
    # everything runs at that size, so the search costs the same at 160 px and at 4K, and
    # memory stays a few small frames (rendered RENDER_BATCH at a time, pooled at once).
    base = max(1, math.ceil(cfg.width / WORK_WIDTH))
    with torch.no_grad():
        frames = torch.cat(
            [
                _pool(unwarped(times[i : i + RENDER_BATCH]), base)
                for i in range(0, len(times), RENDER_BATCH)
            ]
        )
        target = _pool(target, base)
        variance = float(torch.mean((target - target.mean(dim=(0, 2, 3), keepdim=True)) ** 2))
    if not isinstance(model, GridWarpNeRV):
        mse = float(torch.mean((frames - target) ** 2))
        return Motion(0.0, mse, mse, variance)
    # grid_sample's CUDA backward is not deterministic: gathers there (core/codec/warp.py).
    resample = bilinear_border if device.type == "cuda" else grid_sample_border
    still = weights["warp"]
    warp = still.clone().requires_grad_(True)
    opt = FusedAdam(warp, torch.tensor(LR, device=device))
    for s in SCALES:
        src, dst = _pool(frames, s), _pool(target, s)
        for _ in range(STEPS_PER_SCALE):
            loss = torch.mean((model.apply_warp(src, times, warp, resample) - dst) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        mse_still = float(torch.mean((model.apply_warp(frames, times, still) - target) ** 2))
        mse_moved = float(torch.mean((model.apply_warp(frames, times, warp) - target) ** 2))
    px = corner_motion_px(warp.detach().cpu().numpy() - start["warp"], cfg.height, cfg.width)
    return Motion(px, mse_still, mse_moved, variance)


def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool2d(x, factor, ceil_mode=True) if factor > 1 else x


def corner_motion_px(delta: np.ndarray, height: int, width: int) -> float:
    """The largest displacement, in pixels, that warp offsets `delta` (Tg x 6) give any
    corner of the frame in any slot."""
    a = np.asarray(delta, dtype=np.float64).reshape(-1, 2, 3)
    corners = np.array([[x, y, 1.0] for x in (-1.0, 1.0) for y in (-1.0, 1.0)])
    moved = np.einsum("kij,cj->kci", a, corners) * np.array([width / 2, height / 2])
    return float(np.sqrt((moved**2).sum(-1)).max(initial=0.0))
