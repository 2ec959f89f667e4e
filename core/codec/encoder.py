"""Fit one clip: train the residual of a clip model over its frozen start (RQEC)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from core.codec.decoder import clip_times
from core.codec.init import Params
from core.codec.model import BackboneConfig, build_model
from core.codec.motion import Motion, search_warp
from core.codec.rqec import Residual

RATE_WARMUP = 0.2

Progress = Callable[[int, int, float], None]  # (step, total, loss)


@dataclass(frozen=True)
class FitSettings:
    steps: int
    lr: float
    lam: float  # weight of bpp in the loss
    batch: int
    seed: int
    device: str = "cpu"
    motion_search: bool = False  # P-models of the warp backbone: register before training


def frames_to_tensor(frames: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)


@dataclass(frozen=True)
class Fitted:
    q: dict[str, np.ndarray]  # the quantised residual, int32 per layer
    motion: Motion | None  # the motion search's finding (None: no search)


def fit_residual(
    cfg: BackboneConfig,
    start: Params,
    steps_q: dict[str, float],
    frames: np.ndarray,
    clip_length: int,
    fit: FitSettings,
    progress: Progress | None = None,
) -> Fitted:
    """Train delta = theta - theta' for `fit.steps` Adam steps; return q = round(delta/step).

    Minibatches of frames are drawn without replacement from a seeded generator, the
    learning rate follows a cosine from lr to lr/20. Returns int32 arrays per layer.
    """
    device = torch.device(fit.device)
    gen = torch.Generator().manual_seed(fit.seed)
    torch.manual_seed(fit.seed)  # the rate term's uniform noise
    model = build_model(cfg).to(device)
    residual = Residual(start, steps_q, device)
    target = frames_to_tensor(frames, device)
    times = clip_times(len(frames), clip_length).to(device)
    n, pixels = len(frames), frames.shape[0] * frames.shape[1] * frames.shape[2]
    batch = min(fit.batch, n)
    # The warp trains only in a P-model whose motion search found the camera moving: in
    # I-models and on a still camera a trainable warp random-walks under Adam and its
    # sub-pixel resampling blurs the frames (measured in docs/method.md).
    lr_scale = {"warp": 0.0}
    motion: Motion | None = None
    if fit.motion_search and "warp" in start:
        motion = search_warp(cfg, start, target, clip_length, device)
        if motion.moving:
            lr_scale["warp"] = 1.0
    opt = torch.optim.Adam(
        [
            {"params": [d], "lr": fit.lr * lr_scale.get(name, 1.0)}
            for name, d in zip(residual.names, residual.delta, strict=True)
        ],
        lr=fit.lr,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / max(1, fit.steps)))
    )
    order = torch.empty(0, dtype=torch.long)
    for it in range(fit.steps):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:batch], order[batch:]
        idx = idx.to(device)
        out = functional_call(model, residual.weights(), (times[idx],))
        mse = torch.mean((out - target[idx]) ** 2)
        # The rate weight ramps up over the first RATE_WARMUP of the steps: at a fresh start
        # every residual is zero, the fitted Laplace is at its narrowest and a full-strength
        # rate term would pin the model there (measured: I-models collapsing to ~15 dB).
        ramp = min(1.0, (it + 1) / (RATE_WARMUP * fit.steps))
        loss = mse + ramp * fit.lam * residual.rate_bits() / pixels if fit.lam > 0 else mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and ((it + 1) % 10 == 0 or it + 1 == fit.steps):
            progress(it + 1, fit.steps, float(mse.detach()))  # every 10: .item() syncs CUDA
    q = residual.quantised()
    del model, residual, opt, target
    return Fitted(q, motion)
