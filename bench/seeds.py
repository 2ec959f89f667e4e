"""uar against independent over several seeds: is the margin bigger than the noise?

    python -m bench.seeds [--clips pens,book,...] [--seeds 0,1,2] [--jobs 2]

A tiny INR trained for a few hundred Adam steps at a high learning rate lands ±0.5-1 dB
apart from one seed (or one float rounding) to the next, so a single uar/independent pair
can flip sign by chance. This runs both modes at default settings for every (clip, seed)
in parallel child processes (one torch thread each) and reports each pair and the worst
one. Writes bench/results/seeds.json and seeds.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.machine import REPO, machine_info
from bench.rd import CLIPS, DATA, _encode_child

OUT = REPO / "bench" / "results"


def _point(src: str, mode: str, seed: int, frames: int, width: int, tmp: str) -> dict[str, Any]:
    from core.codec.options import EncodeOptions

    opts = EncodeOptions(mode=mode, seed=seed, frames=frames, width=width)
    dst = Path(tmp) / f"{Path(src).stem}-{mode}-{seed}.uarv"
    report = _encode_child(src, str(dst), opts.model_dump_json(), 1)
    t = report["total"]
    motions = [c.get("motion") or {} for c in report["clips"]]
    return {
        "mode": mode,
        "seed": seed,
        "psnr": t["psnr"],
        "bpp": t["bpp"],
        "seconds": t["seconds"],
        "warp_trained": [bool(m.get("warp_trained")) for m in motions],
    }


def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [
        "## uar against independent, several seeds",
        "",
        f"`{m['command']}` on {m['cpu']}, {m['date']}, commit `{(m['git'] or '?')[:12]}`. "
        f"First {res['frames']} frames at width {res['width']}, default options (preset fast).",
        "",
        "| clip | seed | uar dB | uar bpp | independent dB | independent bpp | ΔPSNR dB "
        "| rate ratio | P-clips with warp trained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in res["pairs"]:
        u, i = p["uar"], p["independent"]
        out.append(
            f"| {p['clip']} | {p['seed']} | {u['psnr']:.2f} | {u['bpp']:.4f} | {i['psnr']:.2f} "
            f"| {i['bpp']:.4f} | {p['dpsnr']:+.2f} | {p['rate_ratio']:.2f} "
            f"| {sum(u['warp_trained'])}/{len(u['warp_trained']) - 1} |"
        )
    w = res["worst"]
    out += [
        "",
        f"Worst pair: {w['clip']} seed {w['seed']}, {w['dpsnr']:+.2f} dB at "
        f"{w['rate_ratio']:.2f} of the bits.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", default=",".join(CLIPS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--jobs", type=int, default=2, help="parallel encodes (one thread each)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    clips = args.clips.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    res: dict[str, Any] = {
        "machine": machine_info("bench.seeds"),
        "frames": args.frames,
        "width": args.width,
        "pairs": [],
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool,
    ):
        jobs = {
            (clip, seed, mode): pool.submit(
                _point, str(DATA / CLIPS[clip]), mode, seed, args.frames, args.width, tmp
            )
            for clip in clips
            for seed in seeds
            for mode in ("uar", "independent")
        }
        for clip in clips:
            for seed in seeds:
                u, i = (jobs[clip, seed, m].result() for m in ("uar", "independent"))
                pair = {
                    "clip": clip,
                    "seed": seed,
                    "uar": u,
                    "independent": i,
                    "dpsnr": u["psnr"] - i["psnr"],
                    "rate_ratio": u["bpp"] / i["bpp"],
                }
                res["pairs"].append(pair)
                print(
                    f"{clip:17s} seed {seed}: {pair['dpsnr']:+.2f} dB at "
                    f"{pair['rate_ratio']:.2f} of the bits",
                    flush=True,
                )
    res["worst"] = min(res["pairs"], key=lambda q: q["dpsnr"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(res, indent=1))
    (args.out / "seeds.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
