"""Service load on loopback (issue 5 §7): a benchmark, not a test.

Starts the embedded service (`uarnvc serve`: API + one worker, local store), submits a job
that trains for the whole run, then for `--seconds` sends `--rate` GET /v1/jobs/{id} per
second (open loop: requests are scheduled at a fixed rate whatever the latency) and, a few
seconds in, `--uploads` concurrent uploads. Reports the error rate, latency percentiles and
the API's RSS into bench/results/load.json.

    .venv/bin/python -m bench.load                  # 200 req/s for 30 s + 20 uploads

The per-key rate limit is switched off for the run (UARNVC_RATE_LIMIT=0): this measures
capacity, not the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "load.json"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


async def _status_load(
    client: httpx.AsyncClient, path: str, rate: float, seconds: float
) -> list[tuple[float, int]]:
    """Open-loop GETs: one every 1/rate s; returns (latency s, status or 0 on error)."""
    results: list[tuple[float, int]] = []

    async def one() -> None:
        t0 = time.perf_counter()
        try:
            r = await client.get(path)
            results.append((time.perf_counter() - t0, r.status_code))
        except httpx.HTTPError:
            results.append((time.perf_counter() - t0, 0))

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return results


async def _uploads(
    client: httpx.AsyncClient, video: bytes, n: int, after: float
) -> list[tuple[float, int, str | None]]:
    await asyncio.sleep(after)

    async def one(i: int) -> tuple[float, int, str | None]:
        t0 = time.perf_counter()
        try:
            r = await client.post(
                "/v1/jobs",
                files={"file": (f"u{i}.mkv", video)},
                data={"steps": "5", "params": "6000", "clip_length": "4", "width": "48"},
                timeout=120,
            )
            job = r.json().get("id") if r.status_code == 202 else None
            return time.perf_counter() - t0, r.status_code, job
        except httpx.HTTPError:
            return time.perf_counter() - t0, 0, None

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _rss(proc: psutil.Process, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(proc.memory_info().rss / 2**20)
        await asyncio.sleep(0.5)


def _pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) * 1000 if v else float("nan")


async def run(args: argparse.Namespace, base: str, api: psutil.Process, video: bytes) -> dict:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        r = await client.post(
            "/v1/jobs",
            files={"file": ("train.mkv", video)},
            data={"steps": str(args.steps), "params": "6000", "clip_length": "4", "width": "48"},
        )
        r.raise_for_status()
        job = r.json()["id"]
        await asyncio.sleep(2)
        rss: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_rss(api, stop, rss))
        t0 = time.perf_counter()
        gets, ups = await asyncio.gather(
            _status_load(client, f"/v1/jobs/{job}", args.rate, args.seconds),
            _uploads(client, video, args.uploads, 5.0),
        )
        wall = time.perf_counter() - t0
        stop.set()
        await sampler
        st = (await client.get(f"/v1/jobs/{job}")).json()
        for _lat, code, up_job in ups:
            if code == 202 and up_job:
                await client.delete(f"/v1/jobs/{up_job}")
        await client.delete(f"/v1/jobs/{job}")
    lat = [t for t, c in gets if c == 200]
    errors = sum(1 for _t, c in gets if c != 200)
    up_lat = [t for t, c, _ in ups if c == 202]
    return {
        "requests": len(gets),
        "target_rate": args.rate,
        "achieved_rate": round(len(gets) / wall, 1),
        "seconds": args.seconds,
        "errors": errors,
        "error_rate": errors / max(1, len(gets)),
        "status_codes": {str(c): sum(1 for _t, x in gets if x == c) for c in {c for _t, c in gets}},
        "latency_ms": {
            "p50": round(_pct(lat, 50), 2),
            "p90": round(_pct(lat, 90), 2),
            "p99": round(_pct(lat, 99), 2),
            "max": round(max(lat) * 1000, 2) if lat else None,
        },
        "uploads": {
            "n": len(ups),
            "accepted": len(up_lat),
            "errors": len(ups) - len(up_lat),
            "bytes_each": len(video),
            "latency_ms": {"p50": round(_pct(up_lat, 50), 1), "max": round(_pct(up_lat, 100), 1)},
        },
        "api_rss_mb": {
            "start": round(rss[0], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "end": round(rss[-1], 1) if rss else None,
        },
        "training_job": {
            "status_at_end": st["status"],
            "clips_done": st["clips_done"],
            "clips_total": st["clips_total"],
        },
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--uploads", type=int, default=20)
    p.add_argument("--steps", type=int, default=400, help="training steps of the job")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.fixtures.media import make_video

    with tempfile.TemporaryDirectory(prefix="uarnvc-load-") as tmp:
        video = make_video(Path(tmp) / "v.mkv", frames=24).read_bytes()
        port = _free_port()
        env = {
            **os.environ,
            "UARNVC_RATE_LIMIT": "0",
            "UARNVC_TORCH_THREADS": "1",
            "UARNVC_LOG_LEVEL": "WARNING",
        }
        cmd = [str(Path(sys.executable).with_name("uarnvc")), "serve", "--port", str(port)]
        cmd += ["--data-dir", f"{tmp}/data"]
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait(f"http://127.0.0.1:{port}/healthz")
            report = asyncio.run(
                run(args, f"http://127.0.0.1:{port}", psutil.Process(proc.pid), video)
            )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "loopback; client, API and a training worker share these CPUs",
    }
    report["command"] = " ".join(["python -m bench.load", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
