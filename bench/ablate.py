"""Ablations of the choices the method leaves open (docs/method.md, "Choices"): each
variant against the default.

    python -m bench.ablate [--clips pens,book] [--frames 48] [--width 160] [--only NAME,...]

Each variant changes one thing (an option, or a module constant of the codec for the
choices that are not user options) and encodes the same frames with `encode_file`, the
function the CLI uses. Writes bench/results/ablation.json and ablation.md. Module patches
are applied in this process only; decoding stays exact because the decoder shares the
patched code, which is fine for measuring an encoder-side choice.
"""

# ruff: noqa: E501  (the variant table reads best one line per variant)
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import core.codec.chain as chain_mod
import core.codec.fit as fit_mod
import core.codec.motion as motion_mod
import core.codec.options as options_mod
from bench.machine import REPO
from bench.rd import CLIPS, DATA
from core.codec.files import encode_file
from core.codec.options import EncodeOptions


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _preset(**kw: Any) -> Callable[[], contextlib.AbstractContextManager[None]]:
    fast = options_mod.PRESETS["fast"]
    return lambda: patched(
        options_mod, "PRESETS", {**options_mod.PRESETS, "fast": fast.model_copy(update=kw)}
    )


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


@contextlib.contextmanager
def _warp_always() -> Iterator[None]:
    with patched(motion_mod, "MOTION_PX", 0.0), patched(motion_mod, "MIN_GAIN", -1e9):
        yield


# name -> (what it tests, option overrides, patch factory)
VARIANTS: dict[str, tuple[str, dict[str, Any], Callable[[], Any]]] = {
    "default": ("defaults (uar, L=16, gridwarp, II a_k from correlation + latent hold, motion-gated warp)", {}, _nothing),
    "independent": ("no II/RQEC chain: every clip an I-model (the paper's base)", {"mode": "independent"}, _nothing),
    "ii_plain": ("II without latent continuation (slot-for-slot copy)", {}, lambda: patched(chain_mod, "continue_latents", lambda s: s)),
    "alpha_fixed": ("a_k = 1 always (no correlation-driven strength)", {"adaptive_alpha": False}, _nothing),
    "no_rate": ("lambda = 0: quantisation-aware but no entropy constraint", {"lam": 0.0}, _nothing),
    "no_rate_warmup": ("rate term at full weight from step 0", {}, lambda: patched(fit_mod, "RATE_WARMUP", 1e-9)),
    "q_den_4": ("coarser steps: scale/4", {}, _preset(q_den=4)),
    "q_den_16": ("finer steps: scale/16", {}, _preset(q_den=16)),
    "p_steps_half": ("P-models train half the steps", {}, lambda: patched(options_mod, "P_STEPS_RATIO", 0.5)),
    "clip_8": ("clip length 8", {"clip_length": 8}, _nothing),
    "clip_24": ("clip length 24", {"clip_length": 24}, _nothing),
    "nerv_mlp": ("NeRV MLP stem instead of the latent grid (no warp)", {"backbone": "nerv"}, _nothing),
    "no_warp": ("grid backbone: no global warp", {"backbone": "grid"}, _nothing),
    "warp_always": ("warp trained in every P-model, camera moving or not", {}, _warp_always),
    "key_every_2": ("a new group (I-model) every 2 clips", {"key_interval": 2}, _nothing),
}  # fmt: skip


def run(clips: list[str], frames: int, width: int, only: list[str] | None) -> dict[str, Any]:
    names = only or list(VARIANTS)
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
        "frames": frames,
        "width": width,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            src = DATA / CLIPS.get(clip, clip)
            for name in names:
                what, overrides, patch = VARIANTS[name]
                opts = EncodeOptions(frames=frames, width=width, **overrides)
                with patch():
                    rep = encode_file(src, Path(tmp) / "a.uarv", opts)
                t = rep["total"]
                row = {
                    "clip": clip,
                    "variant": name,
                    "what": what,
                    "psnr": t["psnr"],
                    "bpp": t["bpp"],
                    "seconds": t["seconds"],
                    "key_clips": t["key_clips"],
                    "clips": len(rep["clips"]),
                }
                results["rows"].append(row)
                print(
                    f"{clip:8s} {name:16s} {t['psnr']:6.2f} dB {t['bpp']:.4f} bpp "
                    f"{t['seconds']:6.1f} s  keys {t['key_clips']}/{len(rep['clips'])}",
                    flush=True,
                )
    return results


def to_markdown(res: dict[str, Any]) -> str:
    rows = res["rows"]
    base = {r["clip"]: r for r in rows if r["variant"] == "default"}
    out = [
        f"Ablations: {res['frames']} frames at width {res['width']}, preset fast "
        f"({res['date']}, `{res['command']}`).",
        "",
        "| clip | variant | what changes | PSNR dB | bpp | ΔPSNR | Δbits % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get(r["clip"])
        dp = f"{r['psnr'] - b['psnr']:+.2f}" if b else ""
        db = f"{100 * (r['bpp'] / b['bpp'] - 1):+.1f}" if b else ""
        out.append(
            f"| {r['clip']} | {r['variant']} | {r['what']} | {r['psnr']:.2f} | "
            f"{r['bpp']:.4f} | {dp} | {db} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", default="pens,book")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"sample videos not found at {DATA}", file=sys.stderr)
        return 1
    only = args.only.split(",") if args.only else None
    if only and (unknown := set(only) - set(VARIANTS)):
        print(f"unknown variants {sorted(unknown)}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    res = run(args.clips.split(","), args.frames, args.width, only)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(res, indent=2, default=float))
    (out / "ablation.md").write_text(to_markdown(res))
    print((out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
