"""Seed-to-seed spread of I-models, and what it comes from (docs/method.md, "Stable
training").

    python -m bench.seed_spread [--variants base,init-fixed,...] [--seeds 4]
        [--clips pens,book,...] [--frames 16] [--width 160] [--jobs 2]

Each (variant, clip, seed) trains clip 0 of the clip's first `--frames` frames as an
I-model (fast preset, quality 5, one clip) through `encode_clip`, the function the
service and the CLI use, and records the PSNR and bpp its decoder sees. A variant changes
one thing in the clip's training plan; the seed changes everything the seed reaches (the
start, the minibatch order, the rate term's noise), except what a variant holds fixed.
Writes bench/results/seed_spread.json and seed_spread.md.
"""

# ruff: noqa: E501  (the variant table reads best one line per variant)
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import REPO, machine_info
from bench.rd import CLIPS, DATA

Edit = Callable[[Any], Any]  # FitSettings -> FitSettings
_ORIGINALS: dict[str, Any] = {}  # per process: the codec functions a variant wraps


def _fit(**kw: Any) -> Edit:
    return lambda f: dataclasses.replace(f, **kw)


def _scale_lr(x: float) -> Edit:
    return lambda f: dataclasses.replace(f, lr=f.lr * x)


# name -> (what it tests, edit of the plan's FitSettings, start seed held fixed)
VARIANTS: dict[str, tuple[str, Edit | None, bool]] = {
    "base": ("the fast preset as it is", None, False),
    "init-fixed": ("the start is the same for every seed (order and noise vary)", None, True),
    "order-fixed": ("minibatch order and rate noise fixed (the start varies)", _fit(seed=12345), False),
    "lr-half": ("half the learning rate", _scale_lr(0.5), False),
    "lr-quarter": ("a quarter of the learning rate", _scale_lr(0.25), False),
    "no-rate": ("lambda = 0 (no rate term)", _fit(lam=0.0), False),
    "no-qat": ("unrounded weights throughout (no rounding phase)", _fit(qat_from=1.0), False),
    "batch-16": ("every frame in every step (4x the compute)", _fit(batch=16), False),
    "steps-390": ("30 % more steps", _fit(steps=390), False),
    "steps-1200": ("4x the steps (the slow preset's count)", _fit(steps=1200), False),
}  # fmt: skip


def _one(variant: str, clip: str, seed: int, frames: int, width: int) -> dict[str, Any]:
    """One I-model fit, in a worker process (its own torch thread, its own patch)."""
    import torch

    import core.codec.chain as chain

    torch.set_num_threads(1)
    _what, edit, init_fixed = VARIANTS[variant]
    # A pool process runs many fits: patch from the originals, and put them back after.
    plan_clip, key_start = _ORIGINALS.setdefault("chain", (chain.plan_clip, chain._key_clip_start))

    def plan(*a: Any, **kw: Any) -> Any:
        p = plan_clip(*a, **kw)
        if edit is not None:
            p.fit = edit(p.fit)
        return p

    def start(header: Any, k: int, shapes: dict, scales: dict) -> Any:
        return key_start(dataclasses.replace(header, seed=777), k, shapes, scales)

    chain.plan_clip = plan  # type: ignore[assignment]
    chain._key_clip_start = start if init_fixed else key_start  # type: ignore[assignment]
    try:
        return _fit_clip_0(chain, variant, clip, seed, frames, width)
    finally:
        chain.plan_clip, chain._key_clip_start = plan_clip, key_start  # type: ignore[assignment]


def _fit_clip_0(
    chain: Any, variant: str, clip: str, seed: int, frames: int, width: int
) -> dict[str, Any]:
    from core.codec.options import EncodeOptions
    from core.video import probe, read_frames

    src = DATA / CLIPS[clip]
    pixels = read_frames(src, frames=frames, width=width)
    opts = EncodeOptions(
        preset="fast", quality=5, seed=seed, frames=frames, width=width, clip_length=frames,
        mode="independent",
    )  # fmt: skip
    header = chain.plan_stream(probe(src), opts)
    r = chain.encode_clip(header, 0, pixels, None, opts)
    return {
        "variant": variant,
        "clip": clip,
        "seed": seed,
        "psnr": r.metrics.psnr,
        "bpp": r.metrics.bpp,
        "steps": r.metrics.steps,
        "seconds": r.metrics.seconds,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted(
        {(r["variant"], r["clip"]) for r in rows},
        key=lambda vc: (list(VARIANTS).index(vc[0]), vc[1]),
    )
    for variant, clip in keys:
        ps = [r["psnr"] for r in rows if (r["variant"], r["clip"]) == (variant, clip)]
        bs = [r["bpp"] for r in rows if (r["variant"], r["clip"]) == (variant, clip)]
        out.append({
            "variant": variant, "clip": clip, "seeds": len(ps), "psnr_mean": float(np.mean(ps)),
            "psnr_sd": float(np.std(ps)), "psnr_spread": float(np.ptp(ps)),
            "bpp_mean": float(np.mean(bs)),
        })  # fmt: skip
    return out


def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"I-model seed spread: clip 0 of {res['frames']} frames at width {res['width']}, "
        f"fast preset, quality 5, seeds 0..{res['seeds'] - 1} (`{m['command']}`, "
        f"{m['cpu']}, torch {m['torch']}, {m['date'][:10]}).",
        "",
        "sd: standard deviation of PSNR over the seeds; spread: max − min.",
        "",
        "| variant | what changes | clip | PSNR mean dB | sd dB | spread dB | bpp |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in res["summary"]:
        lines.append(
            f"| {s['variant']} | {VARIANTS[s['variant']][0]} | {s['clip']} | "
            f"{s['psnr_mean']:.2f} | {s['psnr_sd']:.2f} | {s['psnr_spread']:.2f} | "
            f"{s['bpp_mean']:.4f} |"
        )
    lines += [
        "",
        "| variant | mean sd over the clips dB | mean PSNR over the clips dB |",
        "|---|---|---|",
    ]
    for v in dict.fromkeys(s["variant"] for s in res["summary"]):
        sds = [s["psnr_sd"] for s in res["summary"] if s["variant"] == v]
        mus = [s["psnr_mean"] for s in res["summary"] if s["variant"] == v]
        lines.append(f"| {v} | {np.mean(sds):.2f} | {np.mean(mus):.2f} |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(s["variant"] for s in res["summary"]))
    clips = list(dict.fromkeys(s["clip"] for s in res["summary"]))
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(clips))
    for j, clip in enumerate(clips):
        sd = {s["variant"]: s["psnr_sd"] for s in res["summary"] if s["clip"] == clip}
        xs = [i + j * width for i, v in enumerate(variants) if v in sd]
        ax.bar(xs, [sd[v] for v in variants if v in sd], width, label=clip)
    ax.axhline(0.2 / 1.7, color="k", lw=0.8, ls="--", label="sd of a 0.2 dB spread (3 seeds)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(variants))], variants, rotation=30)
    ax.set_ylabel("PSNR sd over seeds (dB)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    variants, clips = args.variants.split(","), args.clips.split(",")
    if unknown := set(variants) - set(VARIANTS):
        print(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    if unknown := set(clips) - set(CLIPS):
        print(f"unknown clips {sorted(unknown)}; known: {list(CLIPS)}", file=sys.stderr)
        return 2
    if not DATA.exists():
        print(f"sample videos not found at {DATA}", file=sys.stderr)
        return 1
    work = [(v, c, s) for v in variants for c in clips for s in range(args.seeds)]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(_one, v, c, s, args.frames, args.width) for v, c, s in work]
        for f in futures:
            r = f.result()
            rows.append(r)
            print(f"{r['variant']:12s} {r['clip']:17s} seed {r['seed']}  {r['psnr']:6.2f} dB  "
                  f"{r['bpp']:.4f} bpp  {r['seconds']:5.1f} s", flush=True)  # fmt: skip
    res = {
        "machine": machine_info("bench.seed_spread"),
        "frames": args.frames,
        "width": args.width,
        "seeds": args.seeds,
        "rows": rows,
        "summary": summarise(rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seed_spread.json").write_text(json.dumps(res, indent=2))
    (out / "seed_spread.md").write_text(to_markdown(res))
    plot(res, out / "seed_spread.png")
    print((out / "seed_spread.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
