"""How long an encode will take, before it starts: a cost model fed by a short calibration.

An encode is clips x (training steps x the time of one step + the clip's fixed work), and
a step of a given model on a given device costs the same at every step of every clip (the
training engine, core/codec/fit.py, runs the same kernels throughout). So the time of an
encode follows from the stream's plan (frame size, model size, steps, clips, groups of
models) and a handful of per-device constants, which are measured, not guessed: a
calibration builds the real training program of the stream's model at the stream's frame
size and times it (docs/method.md, "Encode-time estimates"):

* the training step: one warm-up step, then steps for about CALIBRATION_SECONDS;
* a clip's set-up (its plan and training program) and fixed work after training
  (entropy coding, the statistics), by running the encoder's own functions on a short
  synthetic clip;
* rendering (the encoder measures the PSNR of what the decoder will see), per frame;
* the motion search P-models of the warp backbone run before training.

A calibration is cached per device and configuration, in this process and as JSON under
the data dir, so a second encode of the same size starts at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.codec import options
from core.codec.bitstream import StreamHeader
from core.codec.options import PRESETS, EncodeOptions

CALIBRATION_SECONDS = 0.5  # training steps timed after the warm-up step (at least one)
CALIBRATION_FRAMES = 4  # frames of the synthetic clip (at least the batch)
# A first step this long is not followed by more: its time, less the first step's own
# extra cost, is the step's. FIRST_STEP_SHARE: a steady step's share of the first step,
# measured at 640x360 and 1280x720 on the 2-core CPU (0.80-0.82, docs/method.md).
SLOW_STEP_SECONDS = 4.0
FIRST_STEP_SHARE = 0.8
CACHE_SECONDS = 7 * 24 * 3600  # a calibration on disk is trusted this long
CACHE_VERSION = 1
SEARCH_FRAMES = 8  # = core.codec.motion.SEARCH_FRAMES: frames the motion search renders
WIDTHS = (640, 480, 320, 160)  # widths offered when an encode does not fit
MIN_STEPS = 100  # fewer steps than this are not offered: the model would barely train
HOUR = 3600.0


@dataclass(frozen=True)
class Calibration:
    """Measured costs of one configuration on one device, in seconds."""

    step: float  # one training step
    first_step_extra: float  # what a clip's first step costs on top (kernel set-up)
    clip_setup: float  # plan and training program of a clip
    clip_finish: float  # entropy coding and statistics after training (rendering apart)
    render_frame: float  # rendering one frame of the clip
    motion: float  # the motion search of a P-model (0: the backbone has no warp)
    device: str
    measured_seconds: float  # how long the calibration itself took
    measured_at: float  # time.time()


@dataclass(frozen=True)
class Estimate:
    """The expected time of an encode and what it is made of."""

    seconds: float
    clips: int
    key_clips: int
    clip_seconds: list[float]  # per clip, in stream order
    steps: int
    params: int
    width: int
    height: int
    frames: int
    calibration: Calibration
    cached: bool  # the calibration came from a cache (no measuring this time)

    @property
    def per_clip(self) -> float:
        return self.seconds / max(1, self.clips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "per_clip_seconds": round(self.per_clip, 2),
            "clips": self.clips,
            "key_clips": self.key_clips,
            "steps": self.steps,
            "params": self.params,
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "step_seconds": self.calibration.step,
            "device": self.calibration.device,
        }


@dataclass(frozen=True)
class Fit:
    """A change of options and the estimate with it (None: not estimable here)."""

    options: dict[str, Any]
    seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        secs = None if self.seconds is None else round(self.seconds, 1)
        return {"options": self.options, "estimate_seconds": secs}


# ------------------------------------------------------------------------- calibration


def device_name(device: str) -> str:
    """What the timings depend on: the processor (and its thread count) or the GPU."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device}: CUDA is not available on this machine")
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"cpu:{cpu}:{torch.get_num_threads()} threads"


def _config_key(header: StreamHeader, opts: EncodeOptions) -> dict[str, Any]:
    """Everything a step's and a clip's cost depends on (not the step count)."""
    import torch

    return {
        "v": CACHE_VERSION,
        "torch": torch.__version__,
        "device": device_name(opts.device),
        "backbone": header.backbone,
        "clip_length": header.clip_length,
        "frames": _calibration_frames(header, opts),
        "batch": opts.preset_values.batch,
        "rate": opts.effective_lambda > 0,
        "stream_version": header.version,
    }


def _calibration_frames(header: StreamHeader, opts: EncodeOptions) -> int:
    return min(header.clip_length, max(CALIBRATION_FRAMES, opts.preset_values.batch))


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(header: StreamHeader, opts: EncodeOptions) -> Calibration:
    """Time the encoder's own functions on a short synthetic clip of the stream's size."""
    from core.codec.chain import finish_clip, plan_clip
    from core.codec.device import prepare
    from core.codec.fit import ClipFit, Fitted, frames_to_tensor
    from core.codec.motion import search_warp
    from core.codec.render import render

    t_start = time.perf_counter()
    dev = prepare(opts.device)
    n = _calibration_frames(header, opts)
    cal = replace(header, frames=n)  # one clip of n frames, the stream's model
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, header.height, header.width, 3), dtype=np.uint8)

    t = time.perf_counter()
    plan = plan_clip(cal, 0, frames, None, opts)
    prog = ClipFit(plan.cfg, plan.start, plan.steps_q, frames, header.clip_length, plan.fit)
    _sync(dev)
    setup = time.perf_counter() - t

    t = time.perf_counter()
    prog.prepare_steps()
    prog.advance()
    _sync(dev)
    first = time.perf_counter() - t
    if first >= SLOW_STEP_SECONDS or prog.finished:
        # Minutes per clip: the clip's other work is a few steps' worth and is modelled
        # (a frame rendered ~ a third of a frame trained: forward only), so that the
        # estimate of a large encode is ready after one step.
        step = first * FIRST_STEP_SHARE
        render_frame = step / plan.fit.batch / 3
        motion = SEARCH_FRAMES * render_frame if "warp" in plan.start else 0.0
        return Calibration(
            step=step,
            first_step_extra=first - step,
            clip_setup=setup,
            clip_finish=0.0,
            render_frame=render_frame,
            motion=motion,
            device=device_name(opts.device),
            measured_seconds=time.perf_counter() - t_start,
            measured_at=time.time(),
        )
    # On a CPU each step is timed alone and the median taken, so that a moment when
    # other work takes the cores does not set the cached cost of every later estimate;
    # on a GPU steps are asynchronous and only their mean can be timed.
    done, times = 0, []
    t = last = time.perf_counter()
    while not prog.finished:
        prog.advance()
        done += 1
        if done % 10 == 0 or dev.type != "cuda":
            _sync(dev)
            now = time.perf_counter()
            times.append(now - last)
            last = now
            if now - t >= CALIBRATION_SECONDS:
                break
    _sync(dev)
    step = (time.perf_counter() - t) / done if dev.type == "cuda" else float(np.median(times))

    t = time.perf_counter()
    fitted = Fitted(prog.quantised(), prog.engine, 0.0)
    res = finish_clip(cal, plan, fitted, opts)
    finish = time.perf_counter() - t
    del prog
    # Rendering one frame apart gives the part of `finish` that grows with the frames.
    t = time.perf_counter()
    render(plan.cfg, res.state.decoded, 1, header.clip_length, opts.device, header.version)
    render_frame = time.perf_counter() - t

    motion = 0.0
    if "warp" in plan.start:
        picked = frames[np.arange(min(header.clip_length, SEARCH_FRAMES)) % n]
        target = frames_to_tensor(picked, dev)
        t = time.perf_counter()
        search_warp(plan.cfg, plan.start, target, header.clip_length, dev)
        _sync(dev)
        motion = time.perf_counter() - t
    return Calibration(
        step=step,
        first_step_extra=max(0.0, first - step),
        clip_setup=setup,
        clip_finish=max(0.0, finish - n * render_frame),
        render_frame=render_frame,
        motion=motion,
        device=device_name(opts.device),
        measured_seconds=time.perf_counter() - t_start,
        measured_at=time.time(),
    )


@dataclass
class _Cache:
    """Calibrations of this process, and one lock per configuration so that concurrent
    requests for the same one measure it once."""

    entries: dict[str, Calibration] = field(default_factory=dict)
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: str) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())


_CACHE = _Cache()


def _read_disk(path: Path) -> Calibration | None:
    try:
        cal = Calibration(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return cal if time.time() - cal.measured_at < CACHE_SECONDS else None


def _write_disk(path: Path, cal: Calibration) -> None:
    """Atomically (a concurrent reader sees the old file or the new one, never half)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cal-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(cal), f)
        os.replace(tmp, path)


def calibrate(
    header: StreamHeader, opts: EncodeOptions, cache_dir: Path | None = None
) -> tuple[Calibration, bool]:
    """The calibration of this configuration on opts.device: (calibration, from a cache)."""
    key = hashlib.sha256(
        json.dumps(_config_key(header, opts), sort_keys=True).encode()
    ).hexdigest()[:32]
    with _CACHE.lock(key):
        if key in _CACHE.entries:
            return _CACHE.entries[key], True
        path = cache_dir / f"{key}.json" if cache_dir is not None else None
        cal = _read_disk(path) if path is not None else None
        cached = cal is not None
        if cal is None:
            cal = measure(header, opts)
            if path is not None:
                _write_disk(path, cal)
        _CACHE.entries[key] = cal
        return cal, cached


def clear_cache() -> None:
    """Forget this process's calibrations (tests)."""
    with _CACHE.guard:
        _CACHE.entries.clear()


# ---------------------------------------------------------------------------- estimate


def key_clips(header: StreamHeader, opts: EncodeOptions) -> int:
    """I-models the stream will have at least: one per group of models (scene cuts, which
    show only while encoding, may add more; they cost about what a P-model does)."""
    n = header.num_clips
    if opts.mode != "uar":
        return n
    return math.ceil(n / opts.key_interval) if opts.key_interval > 0 else 1


def from_calibration(
    cal: Calibration, header: StreamHeader, opts: EncodeOptions, cached: bool = False
) -> Estimate:
    """The estimate of encoding `header`'s plan with `opts`, from a calibration."""
    steps = opts.effective_steps
    p_steps = max(1, round(steps * options.P_STEPS_RATIO))
    interval = header.num_clips if opts.mode == "uar" and opts.key_interval == 0 else None
    per_clip: list[float] = []
    for k in range(header.num_clips):
        _, n = header.clip_frames(k)
        if opts.mode != "uar":
            key = True
        elif interval is not None:
            key = k == 0
        else:
            key = k % opts.key_interval == 0
        fixed = cal.clip_setup + cal.first_step_extra + cal.clip_finish + cal.render_frame * n
        secs = fixed + (steps if key else p_steps) * cal.step + (0.0 if key else cal.motion)
        if opts.targeted:  # two short trial encodes per clip choose its quality
            trial = max(10, round(steps * options.TARGET_TRIAL_SHARE))
            secs += 2 * (fixed + trial * cal.step)
        per_clip.append(secs)
    params = _params(header)
    return Estimate(
        seconds=float(sum(per_clip)),
        clips=header.num_clips,
        key_clips=key_clips(header, opts),
        clip_seconds=per_clip,
        steps=steps,
        params=params,
        width=header.width,
        height=header.height,
        frames=header.frames,
        calibration=cal,
        cached=cached,
    )


def _params(header: StreamHeader) -> int:
    import torch

    from core.codec.model import BackboneConfig, build_model

    with torch.device("meta"):  # shapes only
        model = build_model(BackboneConfig.from_dict(header.backbone))
        return int(sum(p.numel() for p in model.parameters()))


def estimate(header: StreamHeader, opts: EncodeOptions, cache_dir: Path | None = None) -> Estimate:
    """The expected time of encoding `header`'s plan with `opts` on opts.device.

    Chains of clips trained side by side (`encode --jobs`) share the device: on a CPU
    they take as long as one after the other, so the estimate does not divide by them.
    """
    cal, cached = calibrate(header, opts, cache_dir)
    return from_calibration(cal, header, opts, cached)


def alternatives(
    info: Any,
    opts: EncodeOptions,
    limit: float,
    cache_dir: Path | None = None,
    *,
    presets: tuple[str, ...] = ("fast", "medium", "slow", "long"),
    suggest_device: bool = True,
) -> list[Fit]:
    """Changes of one option each that bring the encode of `info` (core.video.VideoInfo)
    under `limit` seconds: the slowest faster preset that fits, the steps that fit, the
    widest of WIDTHS below the current width that fits, the frames that fit, and a GPU
    (not estimable without one) when encoding on a CPU."""
    import torch

    from core.codec.chain import plan_stream

    out: list[Fit] = []
    header = plan_stream(info, opts)
    base = estimate(header, opts, cache_dir)
    cal = base.calibration
    if opts.steps is None:
        order = [p for p in presets if PRESETS[p].steps < opts.effective_steps]
        for p in sorted(order, key=lambda p: -PRESETS[p].steps):
            e = from_calibration(cal, header, opts.model_copy(update={"preset": p}))
            if e.seconds <= limit:
                out.append(Fit({"preset": p}, e.seconds))
                break
    per_step = base.clips * cal.step
    fixed = base.seconds - base.steps * per_step
    steps = int((limit - fixed) / per_step) if per_step > 0 else 0
    if MIN_STEPS <= steps < base.steps:
        e = from_calibration(cal, header, opts.model_copy(update={"steps": steps}))
        out.append(Fit({"steps": steps}, e.seconds))
    for w in WIDTHS:
        if w >= header.width:
            continue
        o = opts.model_copy(update={"width": w})
        try:
            e = estimate(plan_stream(info, o), o, cache_dir)
        except ValueError:  # e.g. an explicit --params the smaller frame cannot take
            continue
        if e.seconds <= limit:
            out.append(Fit({"width": w}, e.seconds))
            break
    clips = int(limit // base.per_clip) if base.per_clip > 0 else 0
    if 1 <= clips < base.clips:
        frames = clips * header.clip_length
        o = opts.model_copy(update={"frames": frames})
        out.append(Fit({"frames": frames}, from_calibration(cal, plan_stream(info, o), o).seconds))
    if suggest_device and torch.device(opts.device).type == "cpu":
        out.append(Fit({"device": "cuda"}, None))
    return out


def duration(seconds: float | None) -> str:
    """12.3s, 4m05s, 2h03m."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.1f}s"
    if s < HOUR:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // HOUR)}h{int(s % HOUR // 60):02d}m"


class JobClock:
    """The remaining time of an encode under way: the estimate of the clips not done yet,
    scaled by how the clips done so far compared with their estimates, less the share
    the running clips have trained."""

    def __init__(self, clip_seconds: list[float]) -> None:
        self.estimated = list(clip_seconds)
        self.measured: dict[int, float] = {}
        self.running: dict[int, float] = {}  # clip -> fraction trained
        self.started: dict[int, float] = {}  # clip -> time.monotonic() at its start

    def clip_started(self, k: int, now: float | None = None) -> None:
        """Clip k starts; running clips that finished training are done (their time is
        up to now: they were coded and rendered meanwhile)."""
        now = time.monotonic() if now is None else now
        for j, frac in list(self.running.items()):
            if frac >= 1.0:
                self.clip_done(j, now - self.started[j])
        self.started[k] = now
        self.running[k] = 0.0

    def progress(self, k: int, fraction: float) -> None:
        self.running[k] = min(1.0, max(0.0, fraction))

    def clip_done(self, k: int, seconds: float) -> None:
        """Clip k took `seconds` (the first report of a clip counts)."""
        self.running.pop(k, None)
        self.measured.setdefault(k, seconds)

    @property
    def scale(self) -> float:
        if not self.measured:
            return 1.0
        est = sum(self.estimated[k] for k in self.measured)
        return sum(self.measured.values()) / est if est > 0 else 1.0

    def remaining(self) -> float:
        left = 0.0
        for k, secs in enumerate(self.estimated):
            if k not in self.measured:
                left += secs * (1.0 - self.running.get(k, 0.0))
        return left * self.scale
