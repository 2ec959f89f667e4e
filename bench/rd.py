"""RD sweep: UAR-NVC's modes and classic codecs on real clips, with Bjøntegaard deltas.

    python -m bench.rd [--clips pens,book] [--frames 48] [--width 160] [--preset slow]
                       [--qualities 3,5,7] [--seeds 0,1,2] [--modes uar,independent,whole]
                       [--jobs 2] [--protocol gpu640] [--quick] [--out bench/results]

A point is one encode at a quality (`--quality`, the rate knob: model size, precision and
rate weight together) and a seed; a curve is one mode at one seed across the qualities.
BD figures are computed per seed and averaged; every (quality, seed) point of `uar` is
also compared with `independent` at the same quality and seed.

Why it is built this way:
* INR points come from ``core.codec.files.encode_file``, the function the CLI and the
  service call, so the benchmark measures the shipped codec, not a copy of it.
* Each encode runs in a fresh child process (spawn; ``--jobs`` of them at once, one torch
  thread each): ``ru_maxrss`` is a process high-water mark, so in one long process every
  encode after the first would report the largest peak so far.
* ``whole`` (one model for the whole video) gets the same TOTAL parameter count as the
  clip modes (clips x the per-clip default budget) and, by default, the same total
  number of optimiser steps (clips x steps); otherwise it would just be a smaller model
  trained less, and the comparison would say nothing about the method.
* Classic codecs see exactly the same RGB frames (``bench.classic``).
* Results are rewritten after every point, so a long run that dies keeps what it did;
  ``--resume`` reuses the INR points of an earlier run with the same settings (classic
  sweeps take seconds and are always redone).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench import classic
from bench.bdrate import bd_psnr, bd_rate, bracket
from bench.machine import REPO, machine_info
from bench.plots import rd_plot
from bench.summary import write_summary

DATA = REPO.parent / "shared" / "data"
CLIPS = {
    "pens": "pens.mp4",
    "book": "book.mkv",
    "car-detection": "car-detection.mp4",
    "bottle-detection": "bottle-detection.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
MODES = ("uar", "independent", "whole")
# Pairs reported as (test, anchor): negative BD-rate means `test` needs fewer bits.
PAIRS = (
    ("uar", "independent"),
    ("uar", "whole"),
    ("uar", "x264"),
    ("uar", "x265"),
    ("uar", "x265-veryslow"),
    ("uar", "svtav1 (yuv420p)"),
)
CLIP_KEYS = (
    "index",
    "key",
    "quality",
    "a_k",
    "correlation",
    "steps",
    "bytes",
    "bpp",
    "psnr",
    "seconds",
    "nonzero_residuals",
    "params",
)


@dataclass(frozen=True)
class Settings:
    """What shapes every point of a run; a resumed run must match it exactly."""

    frames: int
    width: int
    qualities: tuple[float, ...]
    seeds: tuple[int, ...]
    modes: tuple[str, ...]
    preset: str
    steps: int | None
    params: int | None  # per clip model; None: the preset's budget for the frame size
    clip_length: int
    whole_steps: str
    classic: tuple[str, ...]
    threads: int  # torch threads per encode; 0 = torch's default
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


# ------------------------------------------------------------------------------ INR side


def model_budget(src: Path, s: Settings, quality: float) -> dict[str, int]:
    """Per-clip parameter count at `quality`, clip count, and what `whole` gets (their
    product)."""
    from core.codec.chain import plan_stream
    from core.codec.model import BackboneConfig, count_params
    from core.codec.options import EncodeOptions
    from core.video import probe

    info = probe(src)
    opts = EncodeOptions(
        mode="uar",
        frames=s.frames,
        width=s.width,
        preset=s.preset,
        params=s.params,
        clip_length=s.clip_length,
        quality=quality,
    )
    header = plan_stream(info, opts)
    per_clip = count_params(BackboneConfig.from_dict(header.backbone))
    total = per_clip * header.num_clips
    whole = plan_stream(info, opts.model_copy(update={"mode": "whole", "params": total}))
    return {
        "per_clip_params": per_clip,
        "clips": header.num_clips,
        "whole_params_budget": total,
        "whole_params_actual": count_params(BackboneConfig.from_dict(whole.backbone)),
    }


def _encode_child(src: str, dst: str, opts_json: str, threads: int) -> dict[str, Any]:
    """Runs in a fresh process: one encode_file call, so peak RSS is this encode's own."""
    import torch

    from core.codec.files import encode_file
    from core.codec.options import EncodeOptions

    if threads > 0:
        torch.set_num_threads(threads)
    return encode_file(src, dst, EncodeOptions.model_validate_json(opts_json))


def inr_point(
    src: Path, mode: str, quality: float, seed: int, s: Settings, tmp: Path
) -> dict[str, Any]:
    """Encode one (mode, quality, seed) point in a child process; keep what the report says."""
    from core.codec.options import PRESETS, EncodeOptions

    update: dict[str, Any] = {}
    budget = model_budget(src, s, quality)
    if mode == "whole":
        update["params"] = budget["whole_params_budget"]
        if s.whole_steps == "matched":
            update["steps"] = (s.steps or PRESETS[s.preset].steps) * budget["clips"]
    opts = EncodeOptions(
        mode=mode,
        quality=quality,
        seed=seed,
        frames=s.frames,
        width=s.width,
        preset=s.preset,
        steps=s.steps,
        params=s.params,
        clip_length=s.clip_length,
        device=s.device,
    ).model_copy(update=update)
    dst = tmp / f"{src.stem}-{mode}-q{quality:g}-s{seed}.uarv"
    report = _encode_child(str(src), str(dst), opts.model_dump_json(), s.threads)
    dst.unlink(missing_ok=True)
    t = report["total"]
    return {
        "quality": quality,
        "seed": seed,
        "psnr": t["psnr"],
        "bpp": t["bpp"],
        "bytes": t["bytes"],
        "seconds": t["seconds"],
        "peak_rss_mb": t["peak_rss_mb"],
        "key_clips": t["key_clips"],
        "steps": opts.effective_steps,
        "params": report["clips"][0]["params"],
        "budget": budget,
        "clips": [{k: c.get(k) for k in CLIP_KEYS} for c in report["clips"]],
    }


# ------------------------------------------------------------------------------ BD table


def _xy(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(p["bpp"], p["psnr"]) for p in points if math.isfinite(p["psnr"])]


def bd_pair(test: list[dict[str, Any]], anchor: list[dict[str, Any]], dense: bool) -> dict:
    """BD-rate and BD-PSNR of `test` against `anchor`. A dense (classic) anchor is cut to
    the points bracketing the test curve's range first (bdrate.bracket)."""
    t = _xy(test)
    a = _xy(anchor)
    a_rate = a_psnr = a
    if dense and t:
        a_psnr = bracket(a, min(q for _, q in t), max(q for _, q in t), axis=1)
        a_rate = bracket(a, min(r for r, _ in t), max(r for r, _ in t), axis=0)
    rate = bd_rate([r for r, _ in a_psnr], [q for _, q in a_psnr], *zip(*t, strict=True))
    psnr = bd_psnr([r for r, _ in a_rate], [q for _, q in a_rate], *zip(*t, strict=True))
    return {"bd_rate_pct": rate.to_dict(), "bd_psnr_db": psnr.to_dict()}


def same_point(test: list[dict[str, Any]], anchor: list[dict[str, Any]]) -> list[dict]:
    """Point-by-point deltas at equal quality and seed (INR pairs): the plain facts under
    any curve fit. `worse`: lower PSNR at an equal or higher rate."""
    by_key = {(p["quality"], p["seed"]): p for p in anchor}
    out = []
    for p in test:
        a = by_key.get((p["quality"], p["seed"]))
        if a is not None:
            d, ratio = p["psnr"] - a["psnr"], p["bpp"] / a["bpp"]
            out.append(
                {
                    "quality": p["quality"],
                    "seed": p["seed"],
                    "d_psnr_db": d,
                    "rate_ratio": ratio,
                    "worse": d < 0 and ratio >= 1,
                }
            )
    return out


def seeds_of(points: list[dict[str, Any]]) -> list[int]:
    return sorted({p.get("seed", 0) for p in points})


def at_seed(points: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    return [p for p in points if p.get("seed", 0) == seed]


def _mean_bd(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed BD cells -> their mean (over the seeds where a value exists) and range."""
    out: dict[str, Any] = {}
    for metric in ("bd_rate_pct", "bd_psnr_db"):
        vals = [c[metric]["value"] for c in cells if c[metric]["value"] is not None]
        out[metric] = {
            "value": float(np.mean(vals)) if vals else None,
            "min": min(vals) if vals else None,
            "max": max(vals) if vals else None,
            "seeds": len(vals),
            "per_seed": [c[metric] for c in cells],
        }
    return out


def monotonic(points: list[dict[str, Any]]) -> bool:
    """PSNR rises with rate along the curve: the premise of a Bjøntegaard fit."""
    pts = sorted(_xy(points))
    return all(b[1] > a[1] for a, b in itertools.pairwise(pts))


def against_dense(test: list[dict[str, Any]], anchor: list[dict[str, Any]]) -> dict:
    """Each test point against the dense anchor curve, interpolated linearly in log rate:
    the anchor's rate at the test point's PSNR and its PSNR at the test point's rate.
    Needs no fit through the test curve, so it holds when that curve is a cluster."""
    a = sorted(_xy(anchor))
    lr = np.log10([r for r, _ in a])
    q = np.maximum.accumulate([q for _, q in a])  # a plateau at the end must not fold back
    ratios, dq = [], []
    for r, p in _xy(test):
        if q[0] <= p <= q[-1]:
            ratios.append(r / 10 ** float(np.interp(p, q, lr)))
        if lr[0] <= math.log10(r) <= lr[-1]:
            dq.append(p - float(np.interp(math.log10(r), lr, q)))
    return {
        "rate_ratio_mean": float(np.exp(np.mean(np.log(ratios)))) if ratios else None,
        "d_psnr_db_mean": float(np.mean(dq)) if dq else None,
        "points": [len(ratios), len(dq)],
    }


def bd_table(results: dict[str, Any]) -> dict[str, Any]:
    """Per clip and pair, plus the average over the clips where a delta is defined."""
    per_clip: dict[str, dict[str, Any]] = {}
    for clip, r in results["clips"].items():
        curves = r["curves"]
        row = {}
        for test, anchor in PAIRS:
            tc, ac = curves.get(test, []), curves.get(anchor, [])
            dense = anchor not in MODES
            per_seed, mono = [], True
            for seed in seeds_of(tc):
                t_pts = at_seed(tc, seed)
                a_pts = ac if dense else at_seed(ac, seed)
                if len(t_pts) >= 2 and len(a_pts) >= 2:
                    per_seed.append(bd_pair(t_pts, a_pts, dense))
                    mono = mono and monotonic(t_pts) and (dense or monotonic(a_pts))
            if not per_seed:
                continue
            cell = _mean_bd(per_seed)
            cell["monotonic"] = mono
            if dense:
                cell["pointwise"] = against_dense(tc, ac)
            else:
                cell["same_point"] = same_point(tc, ac)
            row[f"{test} vs {anchor}"] = cell
        per_clip[clip] = row
    average: dict[str, Any] = {}
    pairs = {p for row in per_clip.values() for p in row}
    for pair in sorted(pairs):
        avg = {}
        for metric in ("bd_rate_pct", "bd_psnr_db"):
            vals = [
                row[pair][metric]["value"]
                for row in per_clip.values()
                if pair in row and row[pair][metric]["value"] is not None
            ]
            avg[metric] = {
                "value": sum(vals) / len(vals) if vals else None,
                "clips": len(vals),
            }
        average[pair] = avg
    return {
        "convention": "test vs anchor: BD-rate % < 0 and BD-PSNR dB > 0 mean the test "
        "(uar) is better. Bjøntegaard, cubic fit (degree points-1 when fewer than 4 "
        "points), overlap only; classic anchors cut to the points bracketing the INR range.",
        "per_clip": per_clip,
        "average": average,
    }


# ------------------------------------------------------------------------------ driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.rd", description=__doc__.split("\n")[0])
    p.add_argument("--clips", default=",".join(CLIPS), help="comma list of clip names")
    p.add_argument("--frames", type=int, default=None, help="first N frames (default 48)")
    p.add_argument("--width", type=int, default=None, help="downscale width (default 160)")
    p.add_argument("--qualities", default=None, help="comma list (default 3,5,7)")
    p.add_argument("--seeds", default=None, help="comma list (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="encodes at once (1 thread each)")
    p.add_argument(
        "--protocol",
        choices=["cpu160", "gpu640"],
        default="cpu160",
        help="cpu160: 48 frames at width 160 (default); gpu640: 120 frames at 640x360, "
        "preset long, on CUDA, one encode at a time",
    )
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--preset", default=None, choices=["fast", "medium", "slow", "long"])
    p.add_argument("--steps", type=int, default=None, help="I-model steps (preset default)")
    p.add_argument("--params", type=int, default=None, help="per-clip model size (preset)")
    p.add_argument("--clip-length", type=int, default=None, help="frames per clip (16)")
    p.add_argument(
        "--whole-steps",
        choices=["matched", "per-model"],
        default="matched",
        help="whole mode: clips x steps (same total optimiser steps; default) or steps",
    )
    p.add_argument("--classic", default=",".join(classic.CODECS), help="comma list or ''")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 2 qualities, 8 frames, 64 px, 20 steps, 4-frame clips, 8000 params",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per encode (default 1: on a shared 2-core box OpenMP spin-waits "
        "burn several times the CPU under contention; 0 = torch default)",
    )
    p.add_argument("--resume", action="store_true", help="reuse points of a matching run")
    p.add_argument(
        "--no-encode",
        action="store_true",
        help="with --resume: encode nothing new; redo classic sweeps, BD table, plots, summary",
    )
    p.add_argument("--data", type=Path, default=DATA, help="folder with the sample clips")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    q = args.quick
    gpu = args.protocol == "gpu640"
    qualities = args.qualities or ("3,7" if q else "3,5,7")
    return Settings(
        frames=args.frames or (8 if q else 120 if gpu else 48),
        width=args.width or (64 if q else 640 if gpu else 160),
        qualities=tuple(float(x) for x in qualities.split(",") if x),
        seeds=tuple(int(x) for x in (args.seeds or "0").split(",") if x),
        modes=tuple(m for m in args.modes.split(",") if m),
        preset=args.preset or ("long" if gpu else "fast"),
        steps=args.steps or (20 if q else None),
        # The preset's budget (1 param/pixel) is below the smallest model at 64 px.
        params=args.params or (8000 if q else None),
        clip_length=args.clip_length or (4 if q else 16),
        whole_steps=args.whole_steps,
        classic=tuple(c for c in args.classic.split(",") if c),
        threads=0 if gpu else args.threads,
        device="cuda" if gpu else "cpu",
    )


def resolve_clips(spec: str, data: Path) -> dict[str, Path]:
    """Clip names (or unique prefixes, e.g. 'car') -> files; exits clearly if missing."""
    if not data.is_dir():
        sys.exit(
            f"bench.rd: sample clips folder {data} is missing; it should hold "
            f"{', '.join(CLIPS.values())} (../shared/data relative to the repo root)"
        )
    out = {}
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        hits = [k for k in CLIPS if k == name] or [k for k in CLIPS if k.startswith(name)]
        if len(hits) != 1:
            sys.exit(f"bench.rd: unknown or ambiguous clip {name!r}; known: {', '.join(CLIPS)}")
        path = data / CLIPS[hits[0]]
        if not path.is_file():
            sys.exit(f"bench.rd: {path} is missing")
        out[hits[0]] = path
    return out


def _save(out: Path, results: dict[str, Any]) -> None:
    tmp = out / "rd.json.part"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "rd.json")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    clips = resolve_clips(args.clips, args.data)
    bad = [m for m in s.modes if m not in MODES] + [c for c in s.classic if c not in classic.CODECS]
    if bad:
        sys.exit(f"bench.rd: unknown mode/codec {bad}")
    args.out.mkdir(parents=True, exist_ok=True)

    previous: dict[str, Any] = {}
    previous_machine: dict[str, Any] | None = None
    if args.resume and (args.out / "rd.json").is_file():
        old = json.loads((args.out / "rd.json").read_text())
        # The classic list does not shape INR points; everything else must match.
        mine = {k: v for k, v in s.to_dict().items() if k != "classic"}
        theirs = {k: v for k, v in old.get("settings", {}).items() if k != "classic"}
        if mine == theirs:
            previous = old.get("clips", {})
            previous_machine = old.get("machine")
            _log(f"resuming: {sum(len(c['curves']) for c in previous.values())} curves found")
        else:
            _log("--resume: earlier rd.json has other settings; starting afresh")

    from core.video import probe, read_frames

    results: dict[str, Any] = {
        "machine": machine_info("bench.rd"),
        "settings": s.to_dict(),
        "notes": [
            "PSNR: mean over frames of RGB PSNR (core.metrics.psnr_per_frame), peak 255.",
            "bpp: whole .uarv file bytes (headers included) x 8 / (frames x W x H); classic: "
            "elementary-stream packet bytes x 8 / (frames x W x H), no container, SEI NAL "
            "units (x264/x265 settings strings) not counted (bytes_raw has them).",
            "whole: one model for all frames with the same TOTAL parameter budget as the clip "
            "modes (clips x per-clip default); steps: "
            + (
                "clips x per-model steps (same total optimiser steps)."
                if s.whole_steps == "matched"
                else "the preset's per-model steps."
            ),
            "x264/x265 in yuv444p (no chroma subsampling) from the same RGB frames; "
            "SVT-AV1 supports 4:2:0 only, so it runs in yuv420p (padded to even size).",
            "peak_rss_mb: each INR encode runs in its own spawned process.",
            f"seconds: wall time with {s.threads or 'default'} torch thread(s) per encode on a "
            "machine shared with other jobs: indicative only.",
        ],
        "clips": {},
    }
    if previous_machine:
        # The INR points were made by this earlier run (command, date, commit).
        results["machine"]["resumed_from"] = previous_machine.get("resumed_from", previous_machine)
    t_run = time.perf_counter()
    entries: dict[str, dict[str, Any]] = {}
    for clip, src in clips.items():
        info = probe(src)
        budget = model_budget(src, s, s.qualities[len(s.qualities) // 2])
        entries[clip] = results["clips"][clip] = {
            "source": os.path.relpath(src, REPO),
            "source_size": [info.width, info.height],
            "budget_middle_quality": budget,
            "curves": {},
            "classic_settings": {},
        }
        old_curves = previous.get(clip, {}).get("curves", {})
        for mode in s.modes:
            entries[clip]["curves"][mode] = [
                p
                for p in old_curves.get(mode, [])
                if (p.get("quality"), p.get("seed")) in set(itertools.product(s.qualities, s.seeds))
            ]
    todo = [
        (clip, mode, quality, seed)
        for clip in clips
        for mode in s.modes
        for quality in s.qualities
        for seed in s.seeds
        if not any(
            (p["quality"], p["seed"]) == (quality, seed) for p in entries[clip]["curves"][mode]
        )
    ]
    if todo and not args.no_encode:
        _log(f"{len(todo)} encodes, {args.jobs} at a time")
        with (
            tempfile.TemporaryDirectory(prefix="bench-rd-") as tmpdir,
            ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool,
        ):
            jobs = {
                pool.submit(inr_point, clips[c], m, q, sd, s, Path(tmpdir)): (c, m, q, sd)
                for c, m, q, sd in todo
            }
            for job in as_completed(jobs):
                c, m, q, sd = jobs[job]
                p = job.result()
                entries[c]["curves"][m].append(p)
                entries[c]["curves"][m].sort(key=lambda x: (x["seed"], x["quality"]))
                _log(
                    f"{c} {m} quality={q:g} seed={sd}: {p['psnr']:.2f} dB {p['bpp']:.4f} bpp "
                    f"{p['seconds']:.0f} s {p['peak_rss_mb']:.0f} MB"
                )
                _save(args.out, results)
    for clip, src in clips.items():
        entry = entries[clip]
        frames = read_frames(src, frames=s.frames, width=s.width)
        t, h, w, _ = frames.shape
        entry.update(frames=t, width=w, height=h)
        for name in s.classic:
            codec = classic.CODECS[name]
            why = classic.available(codec)
            if why:
                entry["classic_settings"][codec.label] = {"skipped": why}
                _log(f"{clip} {codec.label}: skipped ({why})")
                continue
            pts = classic.sweep(frames, codec)  # cheap: always redone, never resumed
            entry["curves"][codec.label] = pts
            entry["classic_settings"][codec.label] = classic.describe(codec)
            _log(f"{clip} {codec.label}: {len(pts)} points")
            _save(args.out, results)
        del frames
        seed0 = s.seeds[0]
        rd_plot(
            args.out / f"rd_{clip}.png",
            f"{clip}: {t} frames {w}x{h}, preset {s.preset}, seed {seed0}",
            {m: (at_seed(pts, seed0) if m in MODES else pts) for m, pts in entry["curves"].items()},
            note=f"INR points: quality {', '.join(f'{q:g}' for q in s.qualities)}; "
            "x26x yuv444p, RGB PSNR",
        )
    results["bd"] = bd_table(results)
    results["seconds"] = time.perf_counter() - t_run
    _save(args.out, results)
    write_summary(args.out / "rd_summary.md", results)
    _log(f"done in {results['seconds'] / 60:.1f} min: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
