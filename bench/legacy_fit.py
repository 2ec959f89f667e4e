"""The previous training loop (one tensor, one Adam group and one rate term per layer),
kept as the reference the flat engine of core/codec/fit.py is measured against
(bench/speed.py) and tested against (tests/core/codec/test_fit.py). Not used by the codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from core.codec.fit import FitSettings, Progress, frames_to_tensor
from core.codec.model import BackboneConfig, build_model
from core.codec.render import clip_times
from core.codec.rqec import laplace_bits, ste_round
from core.codec.warmstart import Params

RATE_WARMUP = 0.2


def fit_residual(
    cfg: BackboneConfig,
    start: Params,
    steps_q: dict[str, float],
    frames: np.ndarray,
    clip_length: int,
    fit: FitSettings,
    progress: Progress | None = None,
) -> LegacyFitted:
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
    # The warp stays frozen, as in an I-model (the reference times I-models).
    lr_scale = {"warp": 0.0}
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
    return LegacyFitted(q)


@dataclass(frozen=True)
class LegacyFitted:
    q: dict[str, np.ndarray]


class Residual(torch.nn.Module):
    """The trainable residuals of one clip model, in weight units, over a frozen start."""

    def __init__(self, start: Params, steps: dict[str, float], device: torch.device) -> None:
        super().__init__()
        self.names = list(start)
        self.start = {n: torch.from_numpy(start[n].copy()).to(device) for n in self.names}
        self.step = {
            n: torch.tensor(steps[n], dtype=torch.float32, device=device) for n in self.names
        }
        self.delta = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros_like(self.start[n])) for n in self.names
        )

    def weights(self) -> dict[str, torch.Tensor]:
        """Quantised weights theta' + step * round(delta / step), straight-through."""
        return {
            n: self.start[n] + ste_round(d / self.step[n]) * self.step[n]
            for n, d in zip(self.names, self.delta, strict=True)
        }

    def rate_bits(self) -> torch.Tensor:
        """Estimated bits of all layers (noise-relaxed), each with its own fitted scale."""
        total = torch.zeros((), device=self.delta[0].device)
        for n, d in zip(self.names, self.delta, strict=True):
            q = d / self.step[n]
            q = q + torch.empty_like(q).uniform_(-0.5, 0.5)
            total = total + laplace_bits(q, q.detach().abs().mean())
        return total

    def quantised(self) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {
                n: torch.round(d / self.step[n]).to(torch.int32).cpu().numpy()
                for n, d in zip(self.names, self.delta, strict=True)
            }
