"""The GPU check: one prepared run on a lent CUDA machine, every result into one JSON.

    python -m bench.gpu_check --out DIR [--data DIR] [--budget SECONDS]

Sections, in priority order, each skipped once the time budget would be exceeded:
1. `encode`: `uarnvc encode` of 48 frames of car-detection at width 640, fast preset,
   run twice as a user would (a fresh process each: start-up included); both streams
   are kept so another machine can decode them (the CPU decode check) and compared byte
   for byte (determinism).
2. `cpu_stream`: a stream encoded on a CPU (given with --cpu-stream), decoded on CUDA:
   its PSNR against the source, to compare with what the CPU encoder reported.
3. `groups`: 8 groups of models (128 frames, key interval 1) encoded one after another
   and all at once (`jobs=8`): wall times and byte equality.
4. `rd_steps`: RD against training steps (1k, 3k, 10k) for 48 frames of bigbuckbunny at
   640x360.
5. `long`: 120 frames of bigbuckbunny at 640x360 with the long preset at a few
   qualities, for the comparison with x265 (whose curve any machine can compute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import REPO, machine_info


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def section_encode(data: Path, out: Path, device: str, width: int) -> dict[str, Any]:
    runs = []
    for tag in ("a", "b"):
        dst, js = out / f"car{width}_{tag}.uarv", out / f"car{width}_{tag}.json"
        cmd = [sys.executable, "-m", "core.cli", "encode", str(data / "car-detection.mp4"),
               "-o", str(dst), "--width", str(width), "--frames", "48", "--device", device,
               "--json", str(js), "-q"]  # fmt: skip
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        wall = time.perf_counter() - t
        rep = json.loads(js.read_text()) if js.exists() else {}
        runs.append({
            "wall_s": wall, "rc": proc.returncode, "stderr": proc.stderr[-2000:],
            "psnr": rep.get("total", {}).get("psnr"), "bytes": rep.get("total", {}).get("bytes"),
            "sha256": _sha(dst) if dst.exists() else None,
            "engines": [c.get("engine") for c in rep.get("clips", [])],
            "train_s": [c.get("train_seconds") for c in rep.get("clips", [])],
        })  # fmt: skip
    (out / f"car{width}_b.uarv").unlink(missing_ok=True)
    (out / f"car{width}_b.json").unlink(missing_ok=True)
    return {"runs": runs, "identical": runs[0]["sha256"] == runs[1]["sha256"] is not None}


def section_profile(data: Path, out: Path, device: str, width: int) -> dict[str, Any]:
    """Where a CLI encode's wall time goes, start-up included (cProfile, top entries)."""
    import pstats

    prof = out / "encode.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "core.cli", "encode",
           str(data / "car-detection.mp4"), "-o", str(out / "p.uarv"), "--width", str(width),
           "--frames", "48", "--device", device, "-q"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    wall = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import torch; torch.zeros(1, device='{device}')"],
                   check=True, timeout=120)  # fmt: skip
    bare = time.perf_counter() - t
    stats = pstats.Stats(str(prof)).sort_stats("cumulative")
    rows = []
    for (file, line, fn), (_, _, _, cum, _) in sorted(
        stats.stats.items(), key=lambda kv: -kv[1][3]
    )[:60]:
        rows.append({"fn": f"{Path(file).name}:{line}:{fn}", "cum_s": cum})
    (out / "p.uarv").unlink(missing_ok=True)
    return {"wall_s": wall, "python_torch_cuda_start_s": bare, "top": rows}


def section_tf32(data: Path, out: Path, width: int) -> dict[str, Any]:
    """The same encode with fp32 and TF32 training products (TF32 cost 2.4 dB at 640 px on
    an H100, bench/results/gpu/, so it is not offered as an option)."""
    from core.codec import fit

    src = data / "car-detection.mp4"
    res = {"fp32": _encode(src, out / "f.uarv", width=width, frames=48)}
    saved = fit.FORCE_TF32
    fit.FORCE_TF32 = True
    try:
        res["tf32"] = _encode(src, out / "t.uarv", width=width, frames=48)
    finally:
        fit.FORCE_TF32 = saved
    return res


def section_groups_small(data: Path, out: Path, steps: int | None) -> dict[str, Any]:
    return {str(w): section_groups(data, out, w, steps) for w in (160, 320)}


def section_cpu_stream(
    stream: Path, source: Path, width: int, frames: int, device: str
) -> dict[str, Any]:
    import numpy as np

    from core.codec.files import iter_decode
    from core.metrics import psnr_per_frame
    from core.video import read_frames

    ref = read_frames(source, frames=frames, width=width)
    with open(stream, "rb") as f:
        _, clips = iter_decode(f, device=device)
        got = np.concatenate([fr for _, fr in clips])
    return {"psnr_cuda_decode": float(np.mean(psnr_per_frame(ref, got)))}


DEVICE = "cuda"


def _sync() -> None:
    import torch

    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


def _encode(src: Path, dst: Path, jobs: int = 1, **opts: Any) -> dict[str, Any]:
    from core.codec.files import encode_file
    from core.codec.options import EncodeOptions

    _sync()
    t = time.perf_counter()
    rep = encode_file(src, dst, EncodeOptions(device=DEVICE, **opts), jobs=jobs)
    _sync()
    return {
        "wall_s": time.perf_counter() - t,
        "psnr": rep["total"]["psnr"],
        "bpp": rep["total"]["bpp"],
        "bytes": rep["total"]["bytes"],
        "sha256": _sha(dst),
        "clips": [
            {k: c.get(k) for k in ("key", "psnr", "bytes", "train_seconds", "seconds", "engine")}
            for c in rep["clips"]
        ],
    }


def section_groups(data: Path, out: Path, width: int, steps: int | None) -> dict[str, Any]:
    src = data / "car-detection.mp4"
    common = {"width": width, "frames": 128, "key_interval": 1, "steps": steps}
    _encode(src, out / "warm.uarv", frames=16, width=width, steps=20)  # CUDA start-up
    one = _encode(src, out / "groups1.uarv", **common)
    many = _encode(src, out / "groups8.uarv", jobs=8, **common)
    return {
        "sequential": one,
        "jobs8": many,
        "ratio": many["wall_s"] / one["wall_s"],
        "identical": one["sha256"] == many["sha256"],
    }


def section_rd_steps(
    data: Path, out: Path, budget: Budget, width: int, steps_list: list[int]
) -> list[dict[str, Any]]:
    rows = []
    for steps in steps_list:
        if budget.left() < steps * 3 / 250 + 20:  # ~250 steps/s at 640x360 (TF32)
            rows.append({"steps": steps, "skipped": "time budget"})
            continue
        r = _encode(data / "bigbuckbunny.mp4", out / "rd.uarv", width=width, frames=48,
                    steps=steps)  # fmt: skip
        rows.append({"steps": steps, **r})
        print(json.dumps(rows[-1])[:300], flush=True)
    return rows


def section_long(
    data: Path,
    out: Path,
    budget: Budget,
    qualities: list[float],
    width: int,
    frames: int,
    steps: int | None,
) -> list[dict]:
    rows = []
    for q in qualities:
        if budget.left() < 90:
            rows.append({"quality": q, "skipped": "time budget"})
            continue
        r = _encode(data / "bigbuckbunny.mp4", out / f"long_q{q:g}.uarv", width=width,
                    frames=frames, preset="long", quality=q, steps=steps)  # fmt: skip
        rows.append({"quality": q, **r})
        print(json.dumps(rows[-1])[:300], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--budget", type=float, default=480, help="seconds for all sections")
    ap.add_argument("--cpu-stream", type=Path, help="a CPU-encoded .uarv of car-detection")
    ap.add_argument("--cpu-stream-width", type=int, default=160)
    ap.add_argument("--cpu-stream-frames", type=int, default=48)
    ap.add_argument("--qualities", default="3,7")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--steps-list", default="1000,3000,10000")
    ap.add_argument("--group-steps", type=int, help="steps per clip in `groups` (preset's)")
    ap.add_argument("--long-frames", type=int, default=120)
    ap.add_argument("--long-steps", type=int, help="override the long preset's steps")
    ap.add_argument(
        "--sections",
        default="encode,cpu_stream,profile,tf32,groups,groups_small,rd_steps,long",
    )
    ap.add_argument("--tf32", action="store_true", help="TF32 training (rd_steps, long)")
    args = ap.parse_args(argv)
    import torch

    from core.codec import fit

    fit.FORCE_TF32 = args.tf32
    global DEVICE
    DEVICE = args.device
    budget = Budget(args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "machine": machine_info("bench.gpu_check"),
        "device": torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else "cpu",
    }
    path = args.out / "gpu_check.json"

    def run(name: str, fn: Any) -> None:
        if name not in args.sections.split(","):
            return
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:  # record and go on: one failure must not cost the others
            res[name] = {"error": f"{type(e).__name__}: {e}"}
        res.setdefault("seconds", {})[name] = time.perf_counter() - t
        path.write_text(json.dumps(res, indent=2))
        print(name, json.dumps(res[name])[:600], flush=True)

    run("encode", lambda: section_encode(args.data, args.out, DEVICE, args.width))
    if args.cpu_stream:
        run(
            "cpu_stream",
            lambda: section_cpu_stream(
                args.cpu_stream,
                args.data / "car-detection.mp4",
                args.cpu_stream_width,
                args.cpu_stream_frames,
                DEVICE,
            ),
        )
    run("profile", lambda: section_profile(args.data, args.out, DEVICE, args.width))
    run("tf32", lambda: section_tf32(args.data, args.out, args.width))
    run("groups", lambda: section_groups(args.data, args.out, args.width, args.group_steps))
    run("groups_small", lambda: section_groups_small(args.data, args.out, args.group_steps))
    steps_list = [int(v) for v in args.steps_list.split(",")]
    run("rd_steps", lambda: section_rd_steps(args.data, args.out, budget, args.width, steps_list))
    qualities = [float(q) for q in args.qualities.split(",")]
    run(
        "long",
        lambda: section_long(
            args.data, args.out, budget, qualities, args.width, args.long_frames, args.long_steps
        ),
    )
    for f in args.out.glob("*.uarv"):  # what comes back is limited: the JSON says it all
        if not f.name.startswith("car"):
            f.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
