"""Training and decoding speed of the codec, against the previous training loop and the
machine's own measured peak.

    python -m bench.speed [--device cpu|cuda] [--widths 160,320,640] [--presets fast]
                          [--steps 40] [--decode-sizes 640x360,1280x720] [--out bench/results]

For each preset and frame width (first 16 frames of car-detection, one I-model):
* steps/s of the training engine (core/codec/fit.py) and of the previous per-layer loop
  (bench/legacy_fit.py) in the same process, on the same model, after a warm-up;
* frames*steps/s, the FLOPs of one training step (torch.utils.flop_counter) and the FLOP/s
  achieved, as a share of this device's measured fp32 matmul and 3x3-convolution peaks;
* the time to encode a 10 s 720p clip, from one measured 720p clip (steps/s, plus the
  clip's measured non-training overhead) times the clips of 10 s at 25 fps;
* decode frames/s (core.codec.render.render, the decoder's path) at the given sizes.
Writes bench/results/speed.json (or speed-cuda.json) and a plot.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.machine import REPO, machine_info

DATA = REPO.parent / "shared" / "data"
SAMPLE = DATA / "car-detection.mp4"
CLIP = 16


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_peaks(dev: torch.device) -> dict[str, float]:
    """fp32 GFLOP/s of a large matmul and of a 3x3 convolution (64 -> 64 channels)."""
    from torch.nn import functional as F

    from core.codec.device import memory_format

    def rate(fn: Any, flops: float, reps: int) -> float:
        fn()
        _sync(dev)
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync(dev)
        return flops * reps / (time.perf_counter() - t) / 1e9

    n = 4096 if dev.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    x = torch.randn(8, 64, 128, 128, device=dev).contiguous(memory_format=memory_format(dev))
    w = torch.randn(64, 64, 3, 3, device=dev)
    reps = 20 if dev.type == "cuda" else 3
    return {
        "matmul_gflops": rate(lambda: a @ b, 2 * n**3, reps),
        "conv3x3_gflops": rate(
            lambda: F.conv2d(x, w, padding=1), 2 * 8 * 128 * 128 * 64 * 64 * 9, reps
        ),
    }


def setup(
    width: int, preset: str, device: str, frames: int = CLIP, src: Path = SAMPLE
) -> dict[str, Any]:
    """The first clip of `src` at `width`, its I-model start and fit settings."""
    from core.codec.chain import _key_clip_start, _model_layout, plan_stream
    from core.codec.options import EncodeOptions
    from core.codec.rqec import layer_steps
    from core.video import iter_clips, probe

    opts = EncodeOptions(width=width, frames=frames, preset=preset, device=device)
    header = plan_stream(probe(src), opts)
    clip = next(iter(iter_clips(src, header.clip_length, frames=frames, width=width)))
    cfg, shapes, scales = _model_layout(header)
    start = _key_clip_start(header, 0, shapes, scales)
    return {
        "opts": opts,
        "header": header,
        "cfg": cfg,
        "start": start,
        "steps_q": layer_steps(scales, opts.rate().q_den),
        "frames": clip,
        "params": int(sum(v.size for v in start.values())),
    }


def _fit_settings(s: dict[str, Any], steps: int, **update: Any) -> Any:
    from core.codec.fit import FitSettings

    opts, pv = s["opts"], s["opts"].preset_values
    return FitSettings(
        **update,
        steps=steps,
        lr=pv.lr,
        lam=opts.effective_lambda,
        batch=pv.batch,
        seed=1,
        device=opts.device,
        qat_from=pv.qat_from,
        average=pv.average,
    )


def engine_rate(s: dict[str, Any], steps: int, **update: Any) -> dict[str, Any]:
    """Steps/s of the flat engine over `steps` steps after its warm-up (and capture)."""
    from core.codec.fit import ClipFit

    fit = _fit_settings(s, steps + 5, **update)
    prog = ClipFit(s["cfg"], s["start"], s["steps_q"], s["frames"], CLIP, fit)
    dev = prog.dev
    t0 = time.perf_counter()
    prog.prepare_steps()
    while prog.done < 5:
        prog.advance()
    _sync(dev)
    startup = time.perf_counter() - t0
    t = time.perf_counter()
    while not prog.finished:
        prog.advance()
    _sync(dev)
    rate = steps / (time.perf_counter() - t)
    return {"steps_per_s": rate, "engine": prog.engine, "startup_s": startup}


def legacy_rate(s: dict[str, Any], steps: int) -> float:
    """Steps/s of the previous loop (its own set-up timed out by a short run first)."""
    from bench.legacy_fit import fit_residual

    def run(n: int) -> float:
        dev = torch.device(s["opts"].device)
        t = time.perf_counter()
        fit_residual(s["cfg"], s["start"], s["steps_q"], s["frames"], CLIP, _fit_settings(s, n))
        _sync(dev)
        return time.perf_counter() - t

    # The previous loop trains through grid_sample, whose CUDA backward has no
    # deterministic version: it ran (and is timed) with deterministic algorithms off.
    strict = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        short = run(3)
        return steps / max(1e-9, run(steps + 3) - short)
    finally:
        torch.use_deterministic_algorithms(strict)


def step_flops(s: dict[str, Any]) -> float:
    """FLOPs of one training step (forward, backward, rate term, optimiser)."""
    from torch.utils.flop_counter import FlopCounterMode

    from core.codec.fit import ClipFit

    prog = ClipFit(s["cfg"], s["start"], s["steps_q"], s["frames"], CLIP, _fit_settings(s, 3))
    prog.advance()
    with FlopCounterMode(display=False) as counter:
        prog.advance()
    return float(counter.get_total_flops())


def decode_rate(width: int, height: int, preset: str, device: str, frames: int) -> dict[str, Any]:
    """Frames/s of the decoder's render path for the preset's model at width x height."""
    from torch.utils.flop_counter import FlopCounterMode

    from core.codec.model import build_model, config_for_budget, smallest_model
    from core.codec.options import EncodeOptions
    from core.codec.render import render

    opts = EncodeOptions(preset=preset)
    name = opts.backbone
    budget = max(
        smallest_model(name, height, width, CLIP),
        round(opts.rate().params_per_pixel * width * height),
    )
    cfg = config_for_budget(name, height, width, CLIP, budget)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(0)
    params = {
        n: (torch.rand(p.shape, generator=gen) - 0.5).mul_(0.2).numpy()
        for n, p in model.named_parameters()
    }
    if "warp" in params:
        params["warp"] = np.zeros_like(params["warp"])
    render(cfg, params, 4, CLIP, device)  # warm-up
    dev = torch.device(device)
    _sync(dev)
    t = time.perf_counter()
    done = 0
    while done < frames:
        n = min(CLIP, frames - done)
        render(cfg, params, n, CLIP, device)
        done += n
    _sync(dev)
    seconds = time.perf_counter() - t
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.tensor([0.5]))
    gflop = counter.get_total_flops() / 1e9
    return {
        "size": f"{width}x{height}",
        "backbone": name,
        "params": int(sum(p.size for p in params.values())),
        "fps": frames / seconds,
        "gflop_per_frame": gflop,
        "gflops": gflop * frames / seconds,
    }


def encode_720p_estimate(preset: str, device: str, steps: int) -> dict[str, Any]:
    """A 10 s 720p clip (250 frames at 25 fps, 16 clips of 16 frames): one 720p clip's
    measured training rate and non-training overhead, scaled up. (On a 2-core CPU the
    real encode takes hours; the estimate says how many.)"""
    from core.codec.files import encode_file
    from core.codec.options import PRESETS

    src = DATA / "bigbuckbunny.mp4"
    s = setup(1280, preset, device, src=src)
    rate = engine_rate(s, steps)["steps_per_s"]
    # Overhead: one real 1-step encode of one clip (probe, decode, plan, motion, code, render).
    with tempfile.TemporaryDirectory() as tmp:
        opts = s["opts"].model_copy(update={"steps": 1, "frames": CLIP})
        t = time.perf_counter()
        encode_file(src, Path(tmp) / "o.uarv", opts)
        overhead = time.perf_counter() - t
    clips = math.ceil(250 / CLIP)
    per_clip = PRESETS[preset].steps / rate + overhead
    return {
        "clips": clips,
        "steps_per_clip": PRESETS[preset].steps,
        "steps_per_s": rate,
        "overhead_per_clip_s": overhead,
        "seconds": clips * per_clip,
        "how": "estimated from one measured 720p clip",
    }


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["train"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    labels = [f"{r['preset']}\n{r['width']}px" for r in rows]
    x = np.arange(len(rows))
    a.bar(x - 0.2, [r["legacy_steps_per_s"] for r in rows], 0.4, label="previous loop")
    a.bar(x + 0.2, [r["steps_per_s"] for r in rows], 0.4, label="flat engine")
    a.set_xticks(x, labels)
    a.set_yscale("log")
    a.set_ylabel("training steps/s (log)")
    a.set_title(f"training, {res['device']}")
    a.legend()
    for i, r in enumerate(rows):
        a.annotate(f"x{r['speedup']:.2f}", (i + 0.2, r["steps_per_s"]), ha="center", va="bottom")
    d = res["decode"]
    b.bar(range(len(d)), [r["fps"] for r in d])
    b.set_xticks(range(len(d)), [r["size"] for r in d])
    b.axhline(30, color="tab:red", ls="--", lw=1, label="30 fps")
    b.set_ylabel("decoded frames/s")
    b.set_title(f"decoding ({res['presets'][0]} preset), {res['device']}")
    b.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--widths", default="160,320,640")
    ap.add_argument("--presets", default="fast")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    ap.add_argument("--decode-sizes", default="640x360,1280x720")
    ap.add_argument("--decode-frames", type=int, default=32)
    ap.add_argument("--no-legacy", action="store_true", help="skip the previous loop")
    ap.add_argument("--no-720p", action="store_true", help="skip the 10 s 720p estimate")
    ap.add_argument(
        "--variants",
        type=int,
        default=0,
        metavar="WIDTH",
        help="also time graph/eager x NCHW/NHWC x fp32/TF32 steps at this width (CUDA)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    res: dict[str, Any] = {
        "machine": machine_info("bench.speed"),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "presets": args.presets.split(","),
        "peaks": measure_peaks(dev),
        "train": [],
        "decode": [],
    }
    print(f"peaks on {res['device']}: {res['peaks']}", flush=True)
    for preset in res["presets"]:
        for width in (int(w) for w in args.widths.split(",")):
            s = setup(width, preset, args.device)
            new = engine_rate(s, args.steps)
            legacy = None if args.no_legacy else legacy_rate(s, args.steps)
            flops = step_flops(s)
            batch = s["opts"].preset_values.batch
            row = {
                "preset": preset,
                "width": width,
                "size": f"{s['header'].width}x{s['header'].height}",
                "backbone": s["cfg"].name,
                "params": s["params"],
                "steps_per_s": new["steps_per_s"],
                "engine": new["engine"],
                "startup_s": new["startup_s"],
                "frame_steps_per_s": new["steps_per_s"] * batch,
                "gflop_per_step": flops / 1e9,
                "gflops": flops * new["steps_per_s"] / 1e9,
                "legacy_steps_per_s": legacy,
                "speedup": new["steps_per_s"] / legacy if legacy else None,
            }
            row["share_of_conv_peak"] = row["gflops"] / res["peaks"]["conv3x3_gflops"]
            res["train"].append(row)
            print(json.dumps(row), flush=True)
    if args.variants:
        s = setup(args.variants, res["presets"][0], args.device)
        res["variants"] = []
        for graphs in (True, False):
            for layout in ("nchw", "nhwc"):
                for tf32 in (False, True):
                    r = engine_rate(s, args.steps, graphs=graphs, layout=layout, tf32=tf32)
                    row = {"width": args.variants, "graphs": graphs, "layout": layout,
                           "tf32": tf32, **r}  # fmt: skip
                    res["variants"].append(row)
                    print(json.dumps(row), flush=True)
    for size in args.decode_sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        row = decode_rate(w, h, res["presets"][0], args.device, args.decode_frames)
        row["share_of_conv_peak"] = row["gflops"] / res["peaks"]["conv3x3_gflops"]
        res["decode"].append(row)
        print(json.dumps(row), flush=True)
    if not args.no_720p:
        res["encode_720p_10s"] = encode_720p_estimate(res["presets"][0], args.device, args.steps)
        print(json.dumps(res["encode_720p_10s"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "speed" if dev.type == "cpu" else f"speed-{dev.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    try:
        plot(res, args.out / f"{stem}.png")
    except ImportError:  # matplotlib is a bench extra; the JSON is the result
        print("matplotlib missing: no plot")
    print(f"wrote {args.out / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
