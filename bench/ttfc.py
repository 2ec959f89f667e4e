"""Time to the first published clip, for a short and a long source (a benchmark, not a test).

Makes a 10 s and a 60 s H.264 source from a sample video (looped, at its own size and
rate; written with PyAV into a temp dir, never into the repo), starts the embedded
service (`uarnvc serve`), and for each source, alternately and `--repeats` times: uploads
it with the same clip settings and measures the time from the upload's `202` to the
moment `GET /v1/jobs/{id}/clips/0` first answers 200 (the chunk is published), then
cancels the job. With the split running ahead of the chain (worker/pipeline.py), that
time should not grow with the video's length.

    .venv/bin/python -m bench.ttfc                   # results in bench/results/ttfc.json
    .venv/bin/python -m bench.ttfc --repo /other/checkout --out before.json

`--repo` runs the service from another checkout (e.g. the code before the change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ttfc.json"
SAMPLE = REPO.parent / "shared" / "data" / "bottle-detection.mp4"
OPTS = {"clip_length": "16", "width": "160", "preset": "fast", "steps": "150", "seed": "1"}


def make_source(src: Path, dst: Path, seconds: float) -> dict:
    """Loop `src` into an H.264 MP4 of `seconds` at the source's own size and rate."""
    import av

    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        rate = Fraction(stream.average_rate or 25)
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(stream)]
    n = round(seconds * float(rate))
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        for i in range(n):
            k = i % (2 * len(frames) - 2)  # forwards then backwards: no jump at the loop
            img = frames[k] if k < len(frames) else frames[2 * len(frames) - 2 - k]
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    h, w = frames[0].shape[:2]
    return {"seconds": seconds, "frames": n, "fps": float(rate), "width": w, "height": h,
            "bytes": dst.stat().st_size}  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(base)


def first_clip(client: httpx.Client, video: Path, timeout: float) -> dict:
    """Upload, then poll clip 0 every 50 ms; the seconds from 202 to its chunk."""
    with open(video, "rb") as f:
        t_up = time.perf_counter()
        r = client.post("/v1/jobs", files={"file": (video.name, f)}, data=OPTS, timeout=300)
    r.raise_for_status()
    t0 = time.perf_counter()
    job = r.json()["id"]
    planned_at_first: int | None = None
    known_at_first: bool | None = None
    try:
        while time.perf_counter() - t0 < timeout:
            if client.get(f"/v1/jobs/{job}/clips/0").status_code == 200:
                ttfc = time.perf_counter() - t0
                st = client.get(f"/v1/jobs/{job}").json()
                planned_at_first = st.get("clips_planned")
                known_at_first = st.get("clips_total_known")
                return {
                    "upload_s": round(t0 - t_up, 3),
                    "ttfc_s": round(ttfc, 3),
                    "clips_total": st["clips_total"],
                    "clips_planned_at_first_clip": planned_at_first,
                    "clips_total_known_at_first_clip": known_at_first,
                }
            time.sleep(0.05)
        raise TimeoutError(f"job {job}: no clip 0 in {timeout} s")
    finally:
        client.delete(f"/v1/jobs/{job}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample", type=Path, default=SAMPLE)
    p.add_argument("--short", type=float, default=10.0, help="seconds")
    p.add_argument("--long", type=float, default=60.0, help="seconds")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--repo", type=Path, default=REPO, help="checkout to run the service from")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if not args.sample.exists():
        print(f"no sample video at {args.sample}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="uarnvc-ttfc-") as tmp:
        sources = {}
        for name, secs in (("short", args.short), ("long", args.long)):
            path = Path(tmp) / f"{name}.mp4"
            sources[name] = (path, make_source(args.sample, path, secs))
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(args.repo.resolve()), "UARNVC_RATE_LIMIT": "0"}
        cmd = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)]
        cmd += ["--data-dir", f"{tmp}/data"]
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=args.repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        runs: dict[str, list[dict]] = {"short": [], "long": []}
        try:
            _wait_ready(base)
            with httpx.Client(base_url=base, timeout=60) as client:
                time.sleep(5)  # let both workers finish starting
                for i in range(args.repeats):
                    order = ("short", "long") if i % 2 == 0 else ("long", "short")
                    for name in order:
                        got = first_clip(client, sources[name][0], timeout=900)
                        print(name, got, flush=True)
                        runs[name].append(got)
                        time.sleep(3)  # the cancelled job's worker lets go
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    med = {n: statistics.median(r["ttfc_s"] for r in runs[n]) for n in runs}
    report = {
        "what": "seconds from the upload's 202 to clip 0's chunk being published",
        "options": OPTS,
        "sources": {n: info for n, (_p, info) in sources.items()},
        "runs": runs,
        "median_ttfc_s": med,
        "long_over_short": round(med["long"] / med["short"], 3),
        "service_repo": str(args.repo.resolve()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
            "note": "embedded service (uarnvc serve) on a CPU shared with other work",
        },
        "command": " ".join(["python -m bench.ttfc", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("median_ttfc_s", "long_over_short")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
