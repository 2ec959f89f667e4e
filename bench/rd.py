"""RD sweep: UAR-NVC's modes and classic codecs on real clips, with Bjøntegaard deltas.

    python -m bench.rd [--clips pens,book] [--frames 48] [--width 160]
                       [--lambdas 5e-4,2e-3,8e-3] [--modes uar,independent,whole]
                       [--quick] [--out bench/results]

Why it is built this way:
* INR points come from ``core.codec.pipeline.encode_file``, the function the CLI and the
  service call, so the benchmark measures the shipped codec, not a copy of it.
* Each encode runs in a fresh child process (spawn, one at a time): ``ru_maxrss`` is a
  process high-water mark, so in one long process every encode after the first would
  report the largest peak so far.
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
from concurrent.futures import ProcessPoolExecutor
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
    lambdas: tuple[float, ...]
    modes: tuple[str, ...]
    preset: str
    steps: int | None
    params: int | None  # per clip model; None: the preset's budget for the frame size
    clip_length: int
    whole_steps: str
    classic: tuple[str, ...]
    threads: int  # torch threads per encode; 0 = torch's default

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


# ------------------------------------------------------------------------------ INR side


def model_budget(src: Path, s: Settings) -> dict[str, int]:
    """Per-clip default parameter count, clip count, and what `whole` gets (their product)."""
    from core.codec.model import BackboneConfig, count_params
    from core.codec.options import EncodeOptions
    from core.codec.stream import plan_stream
    from core.video import probe

    info = probe(src)
    opts = EncodeOptions(
        mode="uar",
        frames=s.frames,
        width=s.width,
        preset=s.preset,
        params=s.params,
        clip_length=s.clip_length,
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

    from core.codec.options import EncodeOptions
    from core.codec.pipeline import encode_file

    if threads > 0:
        torch.set_num_threads(threads)
    return encode_file(src, dst, EncodeOptions.model_validate_json(opts_json))


def inr_point(
    src: Path, mode: str, lam: float, s: Settings, budget: dict[str, int], tmp: Path
) -> dict[str, Any]:
    """Encode one (mode, lambda) point in a child process and keep what the report says."""
    from core.codec.options import PRESETS, EncodeOptions

    update: dict[str, Any] = {}
    if mode == "whole":
        update["params"] = budget["whole_params_budget"]
        if s.whole_steps == "matched":
            update["steps"] = (s.steps or PRESETS[s.preset].steps) * budget["clips"]
    opts = EncodeOptions(
        mode=mode,
        lam=lam,
        frames=s.frames,
        width=s.width,
        preset=s.preset,
        steps=s.steps,
        params=s.params,
        clip_length=s.clip_length,
    ).model_copy(update=update)
    dst = tmp / f"{src.stem}-{mode}-{lam:g}.uarv"
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        job = pool.submit(_encode_child, str(src), str(dst), opts.model_dump_json(), s.threads)
        report = job.result()
    dst.unlink(missing_ok=True)
    t = report["total"]
    return {
        "lambda": lam,
        "psnr": t["psnr"],
        "bpp": t["bpp"],
        "bytes": t["bytes"],
        "seconds": t["seconds"],
        "peak_rss_mb": t["peak_rss_mb"],
        "key_clips": t["key_clips"],
        "steps": opts.effective_steps,
        "params": report["clips"][0]["params"],
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


def same_lambda(test: list[dict[str, Any]], anchor: list[dict[str, Any]]) -> list[dict]:
    """Point-by-point deltas at equal lambda (INR pairs). When a curve is short or not
    monotonic (lambda barely moving the rate), a polynomial BD fit through it is fragile;
    these deltas are the plain facts underneath."""
    by_lam = {p["lambda"]: p for p in anchor}
    out = []
    for p in test:
        a = by_lam.get(p["lambda"])
        if a is not None:
            out.append(
                {
                    "lambda": p["lambda"],
                    "d_psnr_db": p["psnr"] - a["psnr"],
                    "rate_ratio": p["bpp"] / a["bpp"],
                }
            )
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
            if len(curves.get(test, [])) >= 2 and len(curves.get(anchor, [])) >= 2:
                dense = anchor not in MODES
                cell = bd_pair(curves[test], curves[anchor], dense)
                cell["monotonic"] = monotonic(curves[test]) and (dense or monotonic(curves[anchor]))
                if dense:
                    cell["pointwise"] = against_dense(curves[test], curves[anchor])
                else:
                    cell["same_lambda"] = same_lambda(curves[test], curves[anchor])
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
    p.add_argument("--lambdas", default=None, help="comma list (default 5e-4,2e-3,8e-3)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--preset", default="fast", choices=["fast", "medium", "slow"])
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
        help="smoke test: 2 lambdas, 8 frames, 64 px, 20 steps, 4-frame clips, 8000 params",
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
    lambdas = args.lambdas or ("2e-3,8e-3" if q else "5e-4,2e-3,8e-3")
    return Settings(
        frames=args.frames or (8 if q else 48),
        width=args.width or (64 if q else 160),
        lambdas=tuple(float(x) for x in lambdas.split(",") if x),
        modes=tuple(m for m in args.modes.split(",") if m),
        preset=args.preset,
        steps=args.steps or (20 if q else None),
        # The preset's budget (1 param/pixel) is below the smallest model at 64 px.
        params=args.params or (8000 if q else None),
        clip_length=args.clip_length or (4 if q else 16),
        whole_steps=args.whole_steps,
        classic=tuple(c for c in args.classic.split(",") if c),
        threads=args.threads,
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
    with tempfile.TemporaryDirectory(prefix="bench-rd-") as tmpdir:
        for clip, src in clips.items():
            info = probe(src)
            budget = model_budget(src, s)
            frames = read_frames(src, frames=s.frames, width=s.width)
            t, h, w, _ = frames.shape
            entry: dict[str, Any] = {
                "source": os.path.relpath(src, REPO),
                "source_size": [info.width, info.height],
                "frames": t,
                "width": w,
                "height": h,
                "budget": budget,
                "curves": {},
                "classic_settings": {},
            }
            results["clips"][clip] = entry
            old_curves = previous.get(clip, {}).get("curves", {})
            for mode in s.modes:
                pts = []
                done = {p["lambda"]: p for p in old_curves.get(mode, [])}
                for lam in s.lambdas:
                    if lam in done:
                        pts.append(done[lam])
                        continue
                    if args.no_encode:
                        continue
                    _log(f"{clip} {mode} lambda={lam:g} ...")
                    p = inr_point(src, mode, lam, s, budget, Path(tmpdir))
                    _log(
                        f"{clip} {mode} lambda={lam:g}: {p['psnr']:.2f} dB {p['bpp']:.4f} bpp "
                        f"{p['seconds']:.0f} s {p['peak_rss_mb']:.0f} MB"
                    )
                    pts.append(p)
                    entry["curves"][mode] = pts
                    _save(args.out, results)
                if pts:
                    entry["curves"][mode] = pts
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
            rd_plot(
                args.out / f"rd_{clip}.png",
                f"{clip}: {t} frames {w}x{h}, preset {s.preset}",
                entry["curves"],
                note=f"whole: {budget['whole_params_actual']} params "
                f"(= {budget['clips']} clips x {budget['per_clip_params']}); "
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
