"""The clip chain: plan a stream, encode clip k from clip k-1's state, decode it back.

These four functions are the whole codec API the CLI, the service workers and the
benchmarks share. A `ChainState` is what clip k+1 needs from clip k: the start and decoded
parameters (for II) and, on the encoder side, a thumbnail of clip k's last frame (for
choosing a_{k+1}). It serialises to plain numpy bytes (no pickle).
"""

from __future__ import annotations

import io
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.codec import entropy
from core.codec.bitstream import MAX_SIDE, BitstreamError, ClipChunk, StreamHeader
from core.codec.decoder import render
from core.codec.encoder import FitSettings, Progress, fit_residual
from core.codec.init import (
    ALPHA_DEN,
    Params,
    choose_alpha,
    continue_latents,
    correlation,
    interpolate,
    seeded_init,
    thumbnail,
)
from core.codec.model import (
    BACKBONES,
    TEMPORAL_GRID,
    BackboneConfig,
    build_model,
    config_for_budget,
    param_scales,
    smallest_model,
)
from core.codec.options import P_LR_RATIO, P_STEPS_RATIO, EncodeOptions
from core.codec.rqec import dequantise, layer_steps
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
        arrays: dict[str, np.ndarray] = {
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
    metrics: dict[str, Any] = field(default_factory=dict)
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
        round(opts.preset_values.params_per_pixel * width * height),
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


# Bounds on a backbone config read from a stream (the encoder's own budgets are far
# below): checked before anything is allocated, so a hostile header cannot ask for a
# terabyte model or a zero-sized layer (found by tests/fuzz, issue 5).
MAX_MODEL_PARAMS = 50_000_000  # = EncodeOptions.params' upper bound
MAX_CHANNELS = 16384
MAX_STAGES = 12


def check_backbone(header: StreamHeader) -> BackboneConfig:
    """The header's backbone config, validated against the header and the bounds above;
    BitstreamError naming the field otherwise."""
    d = header.backbone

    def bad(msg: str) -> BitstreamError:
        return BitstreamError(f"backbone config: {msg}")

    def show(v: object) -> str:
        r = repr(v)
        return r if len(r) <= 60 else r[:57] + "..."

    def int_field(name: str, lo: int, hi: int) -> int:
        v = d.get(name)
        if type(v) is not int or not lo <= v <= hi:
            raise bad(f"{name} {show(v)} is not an integer in {lo}..{hi}")
        return v

    chans = d.get("channels")
    if not isinstance(chans, list) or not 1 <= len(chans) <= MAX_STAGES + 1:
        raise bad(f"channels {show(chans)} is not a list of 1..{MAX_STAGES + 1} integers")
    if any(type(c) is not int or not 1 <= c <= MAX_CHANNELS for c in chans):
        raise bad(f"channels {show(chans)} outside 1..{MAX_CHANNELS}")
    if d.get("name") not in BACKBONES:
        raise bad(f"unknown backbone {show(d.get('name'))}")
    if int_field("height", 1, MAX_SIDE) != header.height:
        raise bad(f"height {d['height']} differs from the stream's {header.height}")
    if int_field("width", 1, MAX_SIDE) != header.width:
        raise bad(f"width {d['width']} differs from the stream's {header.width}")
    up = 2 ** (len(chans) - 1)
    if int_field("base_h", 1, MAX_SIDE) * up < header.height:
        raise bad(f"base_h {d['base_h']} x {up} does not cover the height")
    if int_field("base_w", 1, MAX_SIDE) * up < header.width:
        raise bad(f"base_w {d['base_w']} x {up} does not cover the width")
    grid = d["name"] in TEMPORAL_GRID
    int_field("grid_t", 1 if grid else 0, 4096)
    int_field("pe_freqs", 0 if grid else 1, 64)
    int_field("mlp_hidden", 0 if grid else 1, 1 << 20)
    if not isinstance(d.get("extra", {}), dict):
        raise bad("extra is not an object")
    try:
        cfg = BackboneConfig.from_dict(d)
        with torch.device("meta"):  # shapes only: nothing is allocated
            n = sum(p.numel() for p in build_model(cfg).parameters())
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


def _key_start(header: StreamHeader, k: int, shapes: dict, scales: dict) -> Params:
    # Each group's I-model gets its own seeded start, reproducible from (seed, k).
    return seeded_init(shapes, scales, (header.seed * 1_000_003 + k) & 0xFFFFFFFF)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def encode_clip(
    header: StreamHeader,
    k: int,
    frames: np.ndarray,
    prev: ChainState | None,
    opts: EncodeOptions,
    progress: Progress | None = None,
) -> ClipResult:
    """Train clip k, code it, and return its chunk, its state for k+1 and its metrics."""
    t0 = time.perf_counter()
    first, n = header.clip_frames(k)
    if frames.shape != (n, header.height, header.width, 3):
        raise ValueError(
            f"clip {k}: frames {frames.shape} != expected {(n, header.height, header.width, 3)}"
        )
    if prev is not None and prev.index != k - 1:
        raise ValueError(f"clip {k}: previous state is of clip {prev.index}")
    cfg, shapes, scales = _model_layout(header)
    pv = opts.preset_values
    thumb_first = thumbnail(frames[0])

    rho = (
        correlation(prev.thumb, thumb_first)
        if prev is not None and prev.thumb is not None
        else None
    )
    alpha_num: int | None = None
    key = (
        prev is None or opts.mode != "uar" or (opts.key_interval > 0 and k % opts.key_interval == 0)
    )
    if not key:
        alpha_num = choose_alpha(rho, opts.scene_cut) if rho is not None else ALPHA_DEN
        if alpha_num is not None and not opts.adaptive_alpha:
            alpha_num = ALPHA_DEN
        key = alpha_num is None
    if key:
        start = _key_start(header, k, shapes, scales)
        alpha_num, group_start = 0, k
    else:
        assert prev is not None and alpha_num is not None
        start = continue_latents(interpolate(prev.start, prev.decoded, alpha_num))
        group_start = prev.group_start

    steps_q = layer_steps(scales, pv.q_den)
    total_steps = opts.effective_steps
    fit = FitSettings(
        steps=total_steps if key else max(1, round(total_steps * P_STEPS_RATIO)),
        lr=pv.lr if key else pv.lr * P_LR_RATIO,
        lam=opts.effective_lambda,
        batch=pv.batch,
        seed=(opts.seed * 7919 + k) & 0xFFFFFFFF,
        device=opts.device,
        motion_search=not key,
    )
    if opts.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    fitted = fit_residual(cfg, start, steps_q, frames, header.clip_length, fit, progress)
    q = fitted.q
    names = list(shapes)
    layer_params, payload = entropy.encode_layers([q[nm] for nm in names])
    chunk = ClipChunk(k, first, n, key, alpha_num, pv.q_den, layer_params, payload).to_bytes()

    decoded = dequantise(start, q, steps_q)
    out = render(cfg, decoded, n, header.clip_length, opts.device)
    per_frame = psnr_per_frame(frames, out)
    mse = float(np.mean((frames.astype(np.float64) - out.astype(np.float64)) ** 2))
    bits = len(chunk) * 8
    metrics: dict[str, Any] = {
        "index": k,
        "first_frame": first,
        "frames": n,
        "key": key,
        "group_start": group_start,
        "a_k": alpha_num / ALPHA_DEN,
        "correlation": rho,
        "steps": fit.steps,
        "motion": None
        if fitted.motion is None
        else {
            "corner_px": fitted.motion.corner_px,
            "gain": fitted.motion.gain,
            "warp_trained": fitted.motion.moving,
        },
        "bytes": len(chunk),
        "bits": bits,
        "bpp": bits / (n * header.width * header.height),
        "psnr": float(np.mean(per_frame)),
        "psnr_frames": [float(v) for v in per_frame],
        "mse": mse,
        "nonzero_residuals": int(sum(int(np.count_nonzero(v)) for v in q.values())),
        "params": int(sum(v.size for v in q.values())),
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _peak_rss_mb(),
    }
    if opts.device.startswith("cuda"):
        metrics["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    state = ChainState(k, group_start, start, decoded, thumbnail(frames[-1]))
    return ClipResult(chunk, state, metrics, out)


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
        start = _key_start(header, k, shapes, scales)
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
    frames = render(cfg, decoded, n, header.clip_length, device)
    return frames, ChainState(k, group_start, start, decoded)
