"""Fit one clip: train the residual of a clip model over its frozen start (RQEC).

This is the training engine. A small INR's step is launch- and overhead-bound long
before it is compute-bound, so the step is written as a few fused passes over flat
tensors rather than a loop over layers (docs/method.md, "Training engine"):

* the residual `delta`, the frozen start and the per-element quantisation steps are
  each one vector (core/codec/flat.py); the network sees per-layer views of
  `start + step * round_ste(delta / step)`;
* the rate term is one elementwise pass over that vector, with each layer's Laplace
  scale from one split-and-sum reduction;
* one fused Adam step (the kernel of torch.optim.Adam(fused=True)) updates the vector;
* the learning rate, the rate-term ramp, the batch indices and the rounding noise come
  from schedules precomputed once and kept on the device, read through a step counter
  that also lives on the device, so a step needs nothing from the host;
* on CUDA the step is captured once as a CUDA graph and replayed (one launch per step),
  falling back to the same step run eagerly where capture fails. Both run the same
  kernels, so the bytes do not depend on which ran;
* the only host synchronisation is the progress callback every PROGRESS_EVERY steps.

`fit_concurrently` trains several independent clip models at once (groups of models
share nothing): on CUDA each program replays on its own stream, so small models that
cannot fill the GPU alone overlap; the arithmetic of each is unchanged, so the bytes do
not depend on how many ran together.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from core.codec.adam import FusedAdam
from core.codec.device import memory_format, prepare
from core.codec.flat import FlatLayout
from core.codec.model import BackboneConfig, GridWarpNeRV, build_model
from core.codec.render import clip_times
from core.codec.rqec import laplace_bits
from core.codec.warmstart import Params
from core.codec.warp import bilinear_border, grid_sample_border

log = logging.getLogger(__name__)

RATE_WARMUP = 0.2  # share of the steps over which the rate weight ramps up
PROGRESS_EVERY = 10  # steps between progress callbacks (each one syncs the device)
GRAPH_WARMUP = 2  # eager steps on a side stream before capture (library handles, workspaces)
_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # golden-ratio increment of the noise phase
# TF32 training products for every fit (bench only): 1.9x the steps/s at 640x360 on an
# H100 but 2.4 dB lower PSNR (bench/results/gpu/), so no encode option offers it.
FORCE_TF32 = False

Progress = Callable[[int, int, float], None]  # (step, total, mse)


@dataclass(frozen=True)
class FitSettings:
    steps: int
    lr: float
    lam: float  # weight of bpp in the loss
    batch: int
    seed: int
    device: str = "cpu"
    graphs: bool = True  # capture the step as a CUDA graph where possible
    qat_from: float = 0.0  # share of the steps trained on unrounded weights first
    frozen: tuple[str, ...] = ()  # layers whose residual stays zero
    warmup: float = 0.0  # share of the steps over which the learning rate ramps up
    average: float = 0.0  # share of the final steps whose residuals are averaged
    layout: str = "auto"  # activations' memory layout: auto (the device's), nchw or nhwc
    tf32: bool = False  # CUDA: TF32 products in training (rendering stays full fp32)


@dataclass(frozen=True)
class Fitted:
    q: dict[str, np.ndarray]  # the quantised residual, int32 per layer
    engine: str  # "cuda-graph" or "eager" (and why, when a capture fell back)
    train_seconds: float  # the training steps alone (set-up, search and quantising excluded)


def frames_to_tensor(frames: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def schedules(fit: FitSettings, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per step: the batch's frame indices (steps, batch) and (lr, rate ramp, noise phase,
    rounding on).

    Minibatches are drawn without replacement, epoch after epoch, from a seeded CPU
    generator; the learning rate follows a cosine from lr to lr/20; the rate weight ramps
    up over the first RATE_WARMUP of the steps: at a fresh start every residual is zero,
    the fitted Laplace is at its narrowest and a full-strength rate term pins the model
    there (measured: I-models collapsing to ~15 dB).
    """
    gen = torch.Generator().manual_seed(fit.seed)
    batch = min(fit.batch, frames)
    order = torch.empty(0, dtype=torch.long)
    rows = []
    for _ in range(fit.steps):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(frames, generator=gen)])
        rows.append(order[:batch])
        order = order[batch:]
    idx = torch.stack(rows)
    i = np.arange(fit.steps, dtype=np.float64)
    lr = fit.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * i / max(1, fit.steps))))
    if fit.warmup > 0:
        lr *= np.minimum(1.0, (i + 1) / (fit.warmup * fit.steps))
    ramp = np.minimum(1.0, (i + 1) / (RATE_WARMUP * fit.steps))
    phase = np.mod(i * _PHI, 1.0)
    hard = (i >= fit.qat_from * fit.steps).astype(np.float64)
    # Weight of step i's residual in the running (uniform) average of the final steps.
    first = fit.steps - max(1, round(fit.average * fit.steps)) if fit.average > 0 else fit.steps
    avg = np.where(i >= first, 1.0 / np.maximum(i - first + 1, 1), 0.0)
    table = np.stack([lr, ramp, phase, hard, avg], axis=1).astype(np.float32)
    return idx, torch.from_numpy(table)


def rate_bits(
    q: torch.Tensor,
    noise: torch.Tensor,
    sizes: Sequence[int],
    seg: torch.Tensor,
    counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Estimated bits of the whole residual q (in steps), noise-relaxed, each layer under a
    zero-mean discretised Laplace whose scale is the layer's mean |q| (what entropy.py's
    coder will fit): one split-and-sum for the scales, then one elementwise pass.
    `counts` (the sizes as a tensor on q's device) must be given inside a CUDA graph."""
    mags = q.detach().abs()
    scale = torch.stack([part.sum() for part in torch.split(mags, list(sizes))])
    if counts is None:
        counts = torch.tensor(sizes, dtype=q.dtype, device=q.device)
    return laplace_bits(q + noise, (scale / counts).index_select(0, seg))


class ClipFit:
    """One clip model's training program: every tensor it touches, allocated once."""

    def __init__(
        self,
        cfg: BackboneConfig,
        start: Params,
        steps_q: dict[str, float],
        frames: np.ndarray,
        clip_length: int,
        fit: FitSettings,
        *,
        train_warp: bool = False,
    ) -> None:
        dev = prepare(fit.device)
        self.fit, self.dev = fit, dev
        self.layout = layout = FlatLayout.of(start)
        self.model = build_model(cfg).to(dev)
        n = len(frames)
        self.fmt = {
            "auto": memory_format(dev),
            "nchw": torch.contiguous_format,
            "nhwc": torch.channels_last,
        }[fit.layout]
        if dev.type == "cuda" and (fit.tf32 or FORCE_TF32):
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        self.target = frames_to_tensor(frames, dev).contiguous(memory_format=self.fmt)
        self.times = clip_times(n, clip_length).to(dev)
        self.pixels = float(n * frames.shape[1] * frames.shape[2])
        self.start = torch.from_numpy(layout.flatten(start)).to(dev)
        self.step_size = torch.from_numpy(
            layout.per_element([steps_q[name] for name in layout.names])
        ).to(dev)
        self.seg = torch.from_numpy(layout.segment_ids()).to(dev)
        self.counts = torch.tensor(layout.sizes, dtype=torch.float32, device=dev)
        self.resample = bilinear_border if dev.type == "cuda" else grid_sample_border
        self.sampling: torch.Tensor | None = None
        self.skip_warp = False
        frozen = set(fit.frozen)
        warp_model = self.model if isinstance(self.model, GridWarpNeRV) else None
        warp_frozen = warp_model is not None and not train_warp
        if warp_frozen:
            frozen.add("warp")
        self.mask: torch.Tensor | None = None
        if frozen:
            keep = [0.0 if name in frozen else 1.0 for name in layout.names]
            self.mask = torch.from_numpy(layout.per_element(keep)).to(dev)
        if warp_model is not None and warp_frozen:
            # A frozen warp is the same map at every step: keep its residual at zero, and
            # resample through a precomputed grid (or not at all at the identity).
            warp = torch.from_numpy(np.asarray(start["warp"], np.float32)).to(dev)
            if not bool(torch.any(warp != 0)):
                self.skip_warp = True
            else:
                size = [n, 3, frames.shape[1], frames.shape[2]]
                with torch.no_grad():
                    self.sampling = warp_model.sampling(self.times, warp, size)
        self.delta = torch.zeros(layout.total, device=dev, requires_grad=True)
        self.lr = torch.tensor(fit.lr, dtype=torch.float32, device=dev)
        self.mean = torch.zeros_like(self.delta) if fit.average > 0 else None
        self.opt = FusedAdam(self.delta, self.lr)
        idx, rows = schedules(fit, n)
        gen = torch.Generator().manual_seed(fit.seed ^ 0x5EED)
        self.noise_base = torch.rand(layout.total, generator=gen).to(dev)
        self.idx_sched, self.row_sched = idx.to(dev), rows.to(dev)
        self.it = torch.zeros(1, dtype=torch.long, device=dev)  # the step counter
        self.done = 0
        self.mse: torch.Tensor = torch.zeros((), device=dev)
        self.graph: Any = None
        self.stream: Any = None
        self.engine = "eager"

    # -------------------------------------------------------------------------- the step

    def _forward(self, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        params = self.layout.views(weights)
        if self.fmt is not torch.contiguous_format:  # 4-d weights in the device's layout
            params = {
                n: p.contiguous(memory_format=self.fmt) if p.dim() == 4 else p
                for n, p in params.items()
            }
        kwargs: dict[str, Any] = {}
        if isinstance(self.model, GridWarpNeRV):
            kwargs["resample"] = self.resample
            if self.skip_warp:
                kwargs["skip_warp"] = True
            elif self.sampling is not None:
                kwargs["sampling"] = self.sampling.index_select(0, idx)
        return functional_call(self.model, params, (self.times.index_select(0, idx),), kwargs)

    def _step(self) -> torch.Tensor:
        """One optimiser step, reading everything it varies from device tensors."""
        idx = self.idx_sched.index_select(0, self.it).view(-1)
        lr, ramp, phase, hard, avg = self.row_sched.index_select(0, self.it).view(5).unbind()
        q = self._q()
        # Rounded (straight-through) once `hard` is on; before that the unrounded weights.
        q_fwd = q + hard * (torch.round(q) - q).detach()
        out = self._forward(self.start + q_fwd * self.step_size, idx)
        mse = torch.mean((out - self.target.index_select(0, idx)) ** 2)
        loss = mse
        if self.fit.lam > 0:
            noise = torch.frac(self.noise_base + phase) - 0.5
            bits = rate_bits(q, noise, self.layout.sizes, self.seg, self.counts)
            loss = mse + ramp * self.fit.lam * bits / self.pixels
        loss.backward()
        self.lr.copy_(lr)
        self.opt.step()
        if self.mean is not None:
            with torch.no_grad():
                self.mean.lerp_(self.delta, avg)
        self.it.add_(1)
        return mse.detach()

    def _q(self, final: bool = False) -> torch.Tensor:
        """The residual in quantisation steps (frozen layers held at zero); `final`: the
        average of the last steps' residuals where averaging is on."""
        delta = self.mean if final and self.mean is not None else self.delta
        delta = delta if self.mask is None else delta * self.mask
        return delta / self.step_size

    def _eager_step(self) -> None:
        self.mse = self._step()
        self.opt.zero_grad()
        self.done += 1

    def _capture(self) -> None:
        """Warm up eagerly on a side stream, then capture one step as a CUDA graph."""
        self.stream = torch.cuda.Stream(self.dev)
        self.stream.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(self.stream):
            for _ in range(min(GRAPH_WARMUP, self.fit.steps - self.done)):
                self._eager_step()
        torch.cuda.current_stream(self.dev).wait_stream(self.stream)
        if self.done >= self.fit.steps:
            return
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad()
        with torch.cuda.graph(graph, stream=self.stream):
            static_mse = self._step()
        self.graph, self.mse, self.engine = graph, static_mse, "cuda-graph"

    def can_capture(self) -> bool:
        return self.dev.type == "cuda" and self.fit.graphs and self.fit.steps > GRAPH_WARMUP

    def prepare_steps(self) -> None:
        """Capture the step where possible; on failure keep the eager step (same kernels)."""
        if not self.can_capture():
            return
        try:
            self._capture()
        except Exception as e:  # any capture failure: the eager step is always correct
            log.warning("CUDA graph capture failed, training eagerly: %s", e)
            if self.dev.type == "cuda":
                torch.cuda.synchronize(self.dev)
            self.graph, self.engine = None, f"eager (capture failed: {type(e).__name__})"
            self.opt.zero_grad()

    def advance(self) -> None:
        """One training step, replayed or eager."""
        if self.graph is not None:
            if self.stream is not None:
                with torch.cuda.stream(self.stream):
                    self.graph.replay()
            else:
                self.graph.replay()
            self.done += 1
        else:
            self._eager_step()

    def current_mse(self) -> float:
        """The last step's MSE (a device sync, on the stream that computed it)."""
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                return float(self.mse)
        return float(self.mse)

    @property
    def finished(self) -> bool:
        return self.done >= self.fit.steps

    def quantised(self) -> dict[str, np.ndarray]:
        """q = round(delta / step), int32 per layer: what the entropy coder sends."""
        if self.stream is not None:
            torch.cuda.current_stream(self.dev).wait_stream(self.stream)
        with torch.no_grad():
            q = torch.round(self._q(final=True)).to(torch.int32).cpu().numpy()
        return self.layout.unflatten(q)


def _run(programs: Sequence[ClipFit], progress: Sequence[Progress | None]) -> float:
    """Step every program to its end, interleaved (one stream each on CUDA)."""
    t0 = time.perf_counter()
    for p in programs:
        p.prepare_steps()
    while not all(p.finished for p in programs):
        for p, cb in zip(programs, progress, strict=True):
            if p.finished:
                continue
            p.advance()
            if cb is not None and (p.done % PROGRESS_EVERY == 0 or p.finished):
                cb(p.done, p.fit.steps, p.current_mse())
    for p in programs:
        if p.dev.type == "cuda":
            torch.cuda.synchronize(p.dev)
    return time.perf_counter() - t0


@dataclass(frozen=True)
class FitJob:
    """Everything one clip's fit needs (see fit_residual)."""

    cfg: BackboneConfig
    start: Params
    steps_q: dict[str, float]
    frames: np.ndarray
    clip_length: int
    fit: FitSettings
    progress: Progress | None = None
    train_warp: bool = False  # the motion search found the camera moving (core/codec/motion.py)


def fit_concurrently(jobs: Sequence[FitJob]) -> list[Fitted]:
    """Train independent clip models together; each result equals fitting it alone."""
    programs = [
        ClipFit(j.cfg, j.start, j.steps_q, j.frames, j.clip_length, j.fit, train_warp=j.train_warp)
        for j in jobs
    ]
    seconds = _run(programs, [j.progress for j in jobs])
    out = [Fitted(p.quantised(), p.engine, seconds) for p in programs]
    del programs
    return out


def fit_residual(
    cfg: BackboneConfig,
    start: Params,
    steps_q: dict[str, float],
    frames: np.ndarray,
    clip_length: int,
    fit: FitSettings,
    progress: Progress | None = None,
) -> Fitted:
    """Train delta = theta - theta' for `fit.steps` Adam steps; return q = round(delta/step)."""
    return fit_concurrently([FitJob(cfg, start, steps_q, frames, clip_length, fit, progress)])[0]
