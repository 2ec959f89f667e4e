"""The clip chain: plan a stream, encode clip k from clip k-1's state, decode it back.

`plan_stream`, `encode_clip` and `decode_clip` are what the CLI (through
core/codec/files.py), the service's workers and the benchmarks share. A `ChainState` is
what clip k+1 needs from clip k (the state, docs/method.md): the start and decoded
parameters (for II) and, on the encoder side, a thumbnail of clip k's last frame (for
choosing clip k+1's alpha, core/codec/scenecut.py). It serialises to plain numpy bytes
(no pickle). The check of a stream's backbone config against its header lives here too.
"""

from __future__ import annotations

import io
import math
import resource
import sys
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from core.codec import entropy, options
from core.codec.bitstream import BitstreamError, ClipChunk, StreamHeader
from core.codec.device import prepare
from core.codec.fit import (
    FitJob,
    FitSettings,
    Fitted,
    Progress,
    fit_concurrently,
    frames_to_tensor,
)
from core.codec.model import (
    BackboneConfig,
    build_model,
    config_for_budget,
    count_params,
    param_scales,
    smallest_model,
)
from core.codec.motion import Motion, search_warp
from core.codec.options import EncodeOptions
from core.codec.render import render
from core.codec.report import ClipMetrics, MotionMetrics, residual_stats
from core.codec.rqec import dequantise, layer_steps
from core.codec.scenecut import choose_alpha, correlation, thumbnail
from core.codec.warmstart import (
    ALPHA_DEN,
    Params,
    continue_latents,
    interpolate,
    is_time_slots,
    seeded_init,
)
from core.metrics import psnr_per_frame
from core.video import VideoInfo, scaled_size


@dataclass
class ChainState:
    index: int
    group_start: int
    start: Params  # theta'_k
    decoded: Params  # theta_hat_k
    thumb: np.ndarray | None = None  # encoder only: last frame's luma thumbnail

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {  # Any: numpy's stubs type savez's **kwds as bool
            "meta": np.array([self.index, self.group_start], dtype=np.int64),
            "names": np.array(list(self.start), dtype=np.str_),
        }
        for i, n in enumerate(self.start):
            arrays[f"s{i}"] = self.start[n]
            arrays[f"d{i}"] = self.decoded[n]
        if self.thumb is not None:
            arrays["thumb"] = self.thumb
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ChainState:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            index, group_start = (int(v) for v in z["meta"])
            start = {n: z[f"s{i}"] for i, n in enumerate(names)}
            decoded = {n: z[f"d{i}"] for i, n in enumerate(names)}
            thumb = z["thumb"] if "thumb" in z.files else None
        return cls(index, group_start, start, decoded, thumb)


@dataclass
class ClipResult:
    chunk: bytes
    state: ChainState
    metrics: ClipMetrics
    frames: np.ndarray | None = None  # the decoded frames (what a decoder will output)


def plan_stream(info: VideoInfo, opts: EncodeOptions) -> StreamHeader:
    """The stream header for encoding `info` with `opts` (sizes after --frames/--width)."""
    width, height = scaled_size(info.width, info.height, opts.width)
    frames = min(info.frames, opts.frames) if opts.frames else info.frames
    clip_length = frames if opts.mode == "whole" else min(opts.clip_length, frames)
    budget = opts.params or max(
        # An unset budget never falls below the narrowest model (tiny frames); an explicit
        # --params that does is refused by config_for_budget with the sizes in the message.
        smallest_model(opts.backbone, height, width, clip_length),
        round(opts.rate(opts.stream_quality(clip_length)).params_per_pixel * width * height),
    )
    cfg = config_for_budget(opts.backbone, height, width, clip_length, budget)
    return StreamHeader(
        width=width,
        height=height,
        fps=info.fps,
        frames=frames,
        clip_length=clip_length,
        mode=opts.mode,
        seed=opts.seed,
        backbone=cfg.to_dict(),
    )


MAX_MODEL_PARAMS = 50_000_000  # = EncodeOptions.params' upper bound


def check_backbone(header: StreamHeader) -> BackboneConfig:
    """The header's backbone config: bounded by its type (core/codec/model.py), agreeing
    with the header, and of at most MAX_MODEL_PARAMS parameters, counted before anything
    is allocated; otherwise BitstreamError naming the field (docs/reliability.md)."""

    def bad(msg: str) -> BitstreamError:
        return BitstreamError(f"backbone config: {msg}")

    d = header.backbone
    for side in ("height", "width"):
        if d.get(side) != getattr(header, side):
            raise bad(
                f"{side} {d.get(side)!r:.60} differs from the stream's {getattr(header, side)}"
            )
    try:
        cfg = BackboneConfig.from_dict(d)
    except ValueError as e:
        raise bad(str(e)) from None
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            n = count_params(cfg)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise bad(f"unusable ({e})") from e
    if n > MAX_MODEL_PARAMS:
        raise bad(f"{n} parameters exceed {MAX_MODEL_PARAMS}")
    return cfg


def _model_layout(
    header: StreamHeader,
) -> tuple[BackboneConfig, dict[str, tuple[int, ...]], dict[str, float]]:
    cfg = check_backbone(header)
    model = build_model(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return cfg, shapes, param_scales(model)


def _key_clip_start(header: StreamHeader, k: int, shapes: dict, scales: dict) -> Params:
    """A key clip's start: a seeded init of its own, reproducible from (seed, k)."""
    return seeded_init(shapes, scales, (header.seed * 1_000_003 + k) & 0xFFFFFFFF)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


@dataclass
class ClipPlan:
    """Everything decided about clip k before training: its start and how it trains."""

    k: int
    frames: np.ndarray
    key_clip: bool
    alpha_num: int
    group_start: int
    rho: float | None
    cfg: BackboneConfig
    names: list[str]
    start: Params
    quality: float
    q_den: int
    steps_q: dict[str, float]
    fit: FitSettings
    t0: float
    motion: Motion | None = None  # how the warm start fits the clip (P-clips)

    @property
    def train_warp(self) -> bool:
        return not self.key_clip and self.motion is not None and self.motion.moving


def plan_clip(
    header: StreamHeader,
    k: int,
    frames: np.ndarray,
    prev: ChainState | None,
    opts: EncodeOptions,
    quality: float | None = None,
) -> ClipPlan:
    """Decide clip k's start (I-model or II from clip k-1) and its training settings, at
    `quality` (default: the options')."""
    t0 = time.perf_counter()
    _, n = header.clip_frames(k)
    if frames.shape != (n, header.height, header.width, 3):
        raise ValueError(
            f"clip {k}: frames {frames.shape} != expected {(n, header.height, header.width, 3)}"
        )
    if prev is not None and prev.index != k - 1:
        raise ValueError(f"clip {k}: previous state is of clip {prev.index}")
    cfg, shapes, scales = _model_layout(header)
    pv = opts.preset_values
    rate = opts.rate(quality)
    rho = (
        correlation(prev.thumb, thumbnail(frames[0]))
        if prev is not None and prev.thumb is not None
        else None
    )
    alpha_num = _alpha_num(k, prev, rho, opts)  # None: a key clip
    motion: Motion | None = None
    if alpha_num is not None:
        assert prev is not None
        start = continue_latents(interpolate(prev.start, prev.decoded, alpha_num))
        group_start = prev.group_start
        # How well the warm start predicts this clip (after the best global warp, for the
        # warp backbone). One that explains less of it than a flat frame would (a cut the
        # thumbnails missed) is compared with a fresh I-model's start; the better one wins.
        # Judging against the flat frame alone would restart chains of weak models (few
        # steps, low quality), which a fresh start serves worse still.
        dev = prepare(opts.device)
        target = frames_to_tensor(frames, dev)
        motion = search_warp(cfg, start, target, header.clip_length, dev)
        if motion.explained < options.RESTART_BELOW:
            fresh = _key_clip_start(header, k, shapes, scales)
            if search_warp(cfg, fresh, target, header.clip_length, dev).mse_moved < (
                motion.mse_moved
            ):
                alpha_num = None
    key_clip = alpha_num is None
    if alpha_num is None:
        start, alpha_num, group_start = _key_clip_start(header, k, shapes, scales), 0, k
    total_steps = opts.effective_steps
    frozen: tuple[str, ...] = ()
    if not key_clip and options.P_TRAIN == "slots":
        frozen = tuple(n for n in shapes if not is_time_slots(n))
    lr = lr_for(pv.lr, sum(int(np.prod(s)) for s in shapes.values()), header)
    fit = FitSettings(
        steps=total_steps if key_clip else max(1, round(total_steps * options.P_STEPS_RATIO)),
        lr=lr if key_clip else lr * options.P_LR_RATIO,
        lam=rate.lam * (1.0 if key_clip else options.P_LAMBDA_RATIO),
        batch=pv.batch,
        seed=(opts.seed * 7919 + k) & 0xFFFFFFFF,
        device=opts.device,
        qat_from=pv.qat_from,
        average=pv.average,
        frozen=frozen,
    )
    return ClipPlan(
        k, frames, key_clip, alpha_num, group_start, rho, cfg, list(shapes), start,
        opts.quality if quality is None else quality, rate.q_den,
        layer_steps(scales, rate.q_den), fit, t0, motion,
    )  # fmt: skip


def _alpha_num(
    k: int, prev: ChainState | None, rho: float | None, opts: EncodeOptions
) -> int | None:
    """II's strength for clip k as its numerator over ALPHA_DEN; None for a key clip: the
    first, one every key_interval clips, every clip outside `uar` mode, or a scene cut."""
    if prev is None or opts.mode != "uar" or (opts.key_interval > 0 and k % opts.key_interval == 0):
        return None
    if rho is None:
        return ALPHA_DEN
    alpha_num = choose_alpha(rho, opts.scene_cut)
    return ALPHA_DEN if alpha_num is not None and not opts.adaptive_alpha else alpha_num


def finish_clip(
    header: StreamHeader, plan: ClipPlan, fitted: Fitted, opts: EncodeOptions
) -> ClipResult:
    """Code clip k's trained residual, render what a decoder will see, and measure it."""
    k, frames, q = plan.k, plan.frames, fitted.q
    first, n = header.clip_frames(k)
    layer_params, payload = entropy.encode_layers([q[nm] for nm in plan.names])
    chunk = ClipChunk(
        k, first, n, plan.key_clip, plan.alpha_num, plan.q_den, layer_params, payload
    ).to_bytes()
    decoded = dequantise(plan.start, q, plan.steps_q)
    out = render(plan.cfg, decoded, n, header.clip_length, opts.device, header.version)
    per_frame = psnr_per_frame(frames, out)
    mse = float(np.mean((frames.astype(np.float64) - out.astype(np.float64)) ** 2))
    bits = len(chunk) * 8
    motion = plan.motion
    metrics = ClipMetrics(
        index=k,
        first_frame=first,
        frames=n,
        key=plan.key_clip,
        group_start=plan.group_start,
        a_k=plan.alpha_num / ALPHA_DEN,
        correlation=plan.rho,
        steps=plan.fit.steps,
        motion=None
        if motion is None
        else MotionMetrics(
            corner_px=motion.corner_px,
            gain=motion.gain,
            warp_trained=plan.train_warp,
            explained=motion.explained,
        ),
        bytes=len(chunk),
        bits=bits,
        bpp=bits / (n * header.width * header.height),
        psnr=float(np.mean(per_frame)),
        psnr_frames=[float(v) for v in per_frame],
        mse=mse,
        nonzero_residuals=int(sum(int(np.count_nonzero(v)) for v in q.values())),
        layer_types=residual_stats(q, layer_params),
        params=int(sum(v.size for v in q.values())),
        quality=plan.quality,
        engine=fitted.engine,
        train_seconds=fitted.train_seconds,
        seconds=time.perf_counter() - plan.t0,
        peak_rss_mb=_peak_rss_mb(),
        peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20
        if opts.device.startswith("cuda")
        else None,
    )
    state = ChainState(k, plan.group_start, plan.start, decoded, thumbnail(frames[-1]))
    return ClipResult(chunk, state, metrics, out)


def lr_for(lr: float, params: int, header: StreamHeader) -> float:
    """Adam's learning rate for a model of `params` parameters: the preset's up to one
    parameter per pixel of a frame, then falling as 1/sqrt(params per pixel). Wider layers
    have smaller weights (init bound 1/sqrt(fan_in)) and the same absolute step moves them
    further: at the preset's rate a model of 2.8 parameters per pixel diverged (pens,
    27.8 dB against 37.2 dB at half the rate; docs/method.md)."""
    per_pixel = params / (header.width * header.height)
    return lr * min(1.0, per_pixel**-0.5)


def search_quality(
    header: StreamHeader,
    k: int,
    frames: np.ndarray,
    prev: ChainState | None,
    opts: EncodeOptions,
) -> float | None:
    """Clip k's quality for --target-bpp/--target-psnr (None: no target, the options').

    Two short trial encodes (TARGET_TRIAL_SHARE of the steps) at the stream's quality
    +- TARGET_SPAN, then linear interpolation in log-bpp (or PSNR) to the target. Short
    trials understate the PSNR a full run reaches, so a PSNR target errs on the side of
    quality; the bits depend mostly on precision and model size, which trials share.
    """
    if not opts.targeted:
        return None
    center = opts.stream_quality(header.clip_length)
    qs = [max(0.0, center - options.TARGET_SPAN), min(10.0, center + options.TARGET_SPAN)]
    steps = max(10, round(opts.effective_steps * options.TARGET_TRIAL_SHARE))
    trial_opts = opts.model_copy(update={"steps": steps})
    ys = []
    for q in qs:
        plan = plan_clip(header, k, frames, prev, trial_opts, q)
        job = FitJob(plan.cfg, plan.start, plan.steps_q, frames, header.clip_length, plan.fit)
        fitted = fit_concurrently([replace(job, train_warp=plan.train_warp)])[0]
        m = finish_clip(header, plan, fitted, trial_opts).metrics
        ys.append(math.log2(m.bpp) if opts.target_bpp is not None else m.psnr)
    target = math.log2(opts.target_bpp) if opts.target_bpp is not None else opts.target_psnr
    assert target is not None
    if abs(ys[1] - ys[0]) < 1e-9:
        return center
    q = qs[0] + (target - ys[0]) * (qs[1] - qs[0]) / (ys[1] - ys[0])
    return float(min(10.0, max(0.0, q)))


def encode_clip(
    header: StreamHeader,
    k: int,
    frames: np.ndarray,
    prev: ChainState | None,
    opts: EncodeOptions,
    progress: Progress | None = None,
) -> ClipResult:
    """Train clip k, code it, and return its chunk, its state for k+1 and its metrics."""
    return encode_clips(header, [(k, frames, prev)], opts, [progress])[0]


def encode_clips(
    header: StreamHeader,
    clips: list[tuple[int, np.ndarray, ChainState | None]],
    opts: EncodeOptions,
    progress: list[Progress | None] | None = None,
) -> list[ClipResult]:
    """Train several independent clips at once (clips of different groups of models) and
    code each; every result is what encode_clip gives for that clip alone."""
    if opts.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    plans = [
        plan_clip(header, k, frames, prev, opts, search_quality(header, k, frames, prev, opts))
        for k, frames, prev in clips
    ]
    callbacks = progress or [None] * len(plans)
    jobs = [
        FitJob(p.cfg, p.start, p.steps_q, p.frames, header.clip_length, p.fit, cb, p.train_warp)
        for p, cb in zip(plans, callbacks, strict=True)
    ]
    fitted = fit_concurrently(jobs)
    return [finish_clip(header, p, f, opts) for p, f in zip(plans, fitted, strict=True)]


def decode_clip(
    header: StreamHeader,
    chunk_bytes: bytes | ClipChunk,
    prev: ChainState | None,
    device: str = "cpu",
) -> tuple[np.ndarray, ChainState]:
    """Rebuild clip k's parameters from its chunk and clip k-1's state; render its frames."""
    chunk = chunk_bytes if isinstance(chunk_bytes, ClipChunk) else ClipChunk.from_bytes(chunk_bytes)
    k = chunk.index
    first, n = header.clip_frames(k) if k < header.num_clips else (-1, -1)
    if k >= header.num_clips:
        raise BitstreamError(f"index beyond the stream's {header.num_clips} clips", k)
    if (chunk.first_frame, chunk.frames) != (first, n):
        raise BitstreamError(
            f"frames {chunk.first_frame}+{chunk.frames} disagree with the header ({first}+{n})", k
        )
    if chunk.q_den < 1:
        raise BitstreamError("quantisation precision 0", k)
    if not chunk.key and chunk.alpha_num > ALPHA_DEN:
        raise BitstreamError(f"II strength {chunk.alpha_num}/{ALPHA_DEN} > 1", k)
    try:
        cfg, shapes, scales = _model_layout(header)
    except BitstreamError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise BitstreamError(f"backbone config unusable ({e})") from e
    if len(chunk.layers) != len(shapes):
        raise BitstreamError(f"{len(chunk.layers)} layers, the backbone has {len(shapes)}", k)
    if chunk.key:
        start = _key_clip_start(header, k, shapes, scales)
        group_start = k
    else:
        if prev is None or prev.index != k - 1:
            raise BitstreamError("P-clip needs the previous clip decoded first", k)
        start = continue_latents(interpolate(prev.start, prev.decoded, chunk.alpha_num))
        group_start = prev.group_start
    sizes = [int(np.prod(s)) for s in shapes.values()]
    try:
        ints = entropy.decode_layers(chunk.layers, sizes, chunk.payload)
    except entropy.EntropyError as e:
        raise BitstreamError(str(e), k) from e
    q = {name: v.reshape(shape) for (name, shape), v in zip(shapes.items(), ints, strict=True)}
    decoded = dequantise(start, q, layer_steps(scales, chunk.q_den))
    frames = render(cfg, decoded, n, header.clip_length, device, header.version)
    return frames, ChainState(k, group_start, start, decoded)
