"""Peak memory vs video length for `uar` (clip by clip) and `whole` (one model), plus
decode speed.

    python -m bench.memory [--src ../shared/data/bottle-detection.mp4] [--width 640]
                           [--lengths 48,96,240] [--steps 5] [--out bench/results]

Why it is built this way:
* Every encode and decode is a separate ``python -m core.cli`` process (the CLI users
  run), so each peak is that run's own and nothing leaks between runs. We read the
  peak the codec reports (``--json`` ``total.peak_rss_mb``) and cross-check it with the
  kernel's accounting for the child (``os.wait4`` rusage, which also covers the
  interpreter's import and exit).
* Training steps barely move memory (the same tensors every step), so a few suffice: the
  question is whether memory follows clip length (uar) or video length (whole).
* ``whole`` keeps the preset's per-model parameter budget (its temporal grid still grows
  with the video: one slot per two frames); what grows with length is the frames it must
  hold and render at once, which is the paper's point.
* Decode speed: ``uarnvc decode`` to lossless .mkv of the longest stream of each mode,
  timed as a whole process and as ``decode_file`` alone (start-up excluded); CPU seconds
  too, since wall time on a shared 2-core machine depends on the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import REPO, machine_info
from bench.plots import xy_plot

DEFAULT_SRC = REPO.parent / "shared" / "data" / "bottle-detection.mp4"


@dataclass(frozen=True)
class Measured:
    """What the kernel says about one finished child process."""

    wall: float  # seconds
    cpu: float  # user + system seconds: robust when other jobs share the CPUs
    rss_mb: float  # peak resident set size
    stdout: str


def run_measured(cmd: list[str]) -> Measured:
    """Run `cmd` to completion and measure it; raises with the child's stderr if it fails."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        tail = err.read().decode(errors="replace")[-2000:]
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout)


def cli(*args: str) -> list[str]:
    """The codec CLI in this interpreter (same as the `uarnvc` console script)."""
    return [sys.executable, "-m", "core.cli", *args]


# decode_file (what `uarnvc decode` calls) timed inside the child, so interpreter and
# torch start-up, which dominate short streams on a busy machine, are left out.
_TIMED_DECODE = (
    "import sys, time\n"
    "from core.codec.files import decode_file\n"
    "t = time.perf_counter(); c = time.process_time()\n"
    "decode_file(sys.argv[1], sys.argv[2])\n"
    "print(time.perf_counter() - t, time.process_time() - c)\n"
)


def encode_point(src: Path, mode: str, frames: int, args: argparse.Namespace, tmp: Path) -> dict:
    """One encode in its own process; the report's and the kernel's peak RSS."""
    dst = tmp / f"{mode}-{frames}.uarv"
    js = tmp / f"{mode}-{frames}.json"
    cmd = cli(
        "encode", str(src), "-o", str(dst), "--mode", mode, "--frames", str(frames),
        "--width", str(args.width), "--steps", str(args.steps), "--json", str(js), "-q",
    )  # fmt: skip
    m = run_measured(cmd)
    rep = json.loads(js.read_text())
    t = rep["total"]
    return {
        "mode": mode,
        "frames": rep["frames"],
        "size": [rep["width"], rep["height"]],
        "clips": len(rep["clips"]),
        "params_per_model": rep["clips"][0]["params"],
        "peak_rss_mb": t["peak_rss_mb"],
        "peak_rss_mb_kernel": m.rss_mb,
        "encode_seconds": t["seconds"],
        "wall_seconds": m.wall,
        "cpu_seconds": m.cpu,
        "psnr": t["psnr"],
        "bpp": t["bpp"],
        "stream": str(dst),
    }


def decode_point(stream: Path, frames: int, tmp: Path) -> dict[str, Any]:
    """Time `uarnvc decode` of one stream to lossless .mkv: the CLI process as a whole,
    and decode_file alone inside a child (no start-up)."""
    out = tmp / (stream.stem + ".mkv")
    whole = run_measured(cli("decode", str(stream), "-o", str(out)))
    out.unlink(missing_ok=True)
    inner = run_measured([sys.executable, "-c", _TIMED_DECODE, str(stream), str(out)])
    out.unlink(missing_ok=True)
    wall, cpu = (float(x) for x in inner.stdout.split()[-2:])
    return {
        "frames": frames,
        "cli_wall_seconds": whole.wall,
        "cli_cpu_seconds": whole.cpu,
        "cli_fps": frames / whole.wall,
        "decode_seconds": wall,
        "decode_cpu_seconds": cpu,
        "fps": frames / wall,
        "peak_rss_mb_kernel": whole.rss_mb,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, default=DEFAULT_SRC)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--lengths", default="48,96,240", help="comma list of frame counts")
    p.add_argument("--steps", type=int, default=5, help="training steps (memory barely cares)")
    p.add_argument("--modes", default="uar,whole")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.src.is_file():
        sys.exit(f"bench.memory: source clip {args.src} is missing (../shared/data?)")
    lengths = [int(x) for x in args.lengths.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine_info("bench.memory"),
        "settings": {
            "src": os.path.relpath(args.src, REPO),
            "width": args.width,
            "lengths": lengths,
            "steps": args.steps,
            "modes": modes,
        },
        "notes": [
            "peak_rss_mb: the codec's own report (ru_maxrss at the end of each clip); "
            "peak_rss_mb_kernel: os.wait4 rusage of the whole CLI process.",
            "whole keeps the preset's per-model budget; its temporal grid has one slot per "
            "two frames, so its parameter count grows with length too (params_per_model).",
            "decode fps: frames / seconds of decode_file (what `uarnvc decode` calls) to FFV1 "
            ".mkv, timed inside a child; cli_fps: frames / wall time of the whole "
            "`python -m core.cli decode` process (start-up included).",
            "cpu_seconds (user+sys) are given because the 2 CPUs are shared with other jobs, "
            "which inflates wall times.",
        ],
        "encode": [],
        "decode": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as d:
        tmp = Path(d)
        for mode in modes:
            for n in lengths:
                p = encode_point(args.src, mode, n, args, tmp)
                print(
                    f"{mode:5s} {p['frames']:4d} frames {p['size'][0]}x{p['size'][1]}: "
                    f"peak {p['peak_rss_mb']:.0f} MB (kernel {p['peak_rss_mb_kernel']:.0f}), "
                    f"{p['wall_seconds']:.0f} s, {p['params_per_model']} params/model",
                    flush=True,
                )
                results["encode"].append(p)
        for mode in modes:
            longest = max((p for p in results["encode"] if p["mode"] == mode), key=_frames)
            dec = decode_point(Path(longest["stream"]), longest["frames"], tmp)
            results["decode"][mode] = dec
            print(
                f"decode {mode}: {dec['frames']} frames, decode_file {dec['decode_seconds']:.1f} s"
                f" = {dec['fps']:.1f} fps; CLI process {dec['cli_wall_seconds']:.1f} s = "
                f"{dec['cli_fps']:.1f} fps, peak {dec['peak_rss_mb_kernel']:.0f} MB",
                flush=True,
            )
    for p in results["encode"]:
        p["stream"] = Path(p["stream"]).name
    (args.out / "memory.json").write_text(json.dumps(results, indent=1))
    series = {
        m: [(p["frames"], p["peak_rss_mb"]) for p in results["encode"] if p["mode"] == m]
        for m in modes
    }
    first = results["encode"][0]
    xy_plot(
        args.out / "memory.png",
        f"Peak RSS vs length: {args.src.name} at {first['size'][0]}x{first['size'][1]}",
        "frames encoded",
        "peak RSS (MB)",
        series,
    )
    print(f"wrote {args.out / 'memory.json'} and memory.png")
    return 0


def _frames(p: dict[str, Any]) -> int:
    return int(p["frames"])


if __name__ == "__main__":
    raise SystemExit(main())
