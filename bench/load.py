"""Service load on loopback (docs/reliability.md, "Load"): a benchmark, not a test.

Starts the embedded service (`uarnvc serve`: API + workers, local store), submits a job
that trains for the whole run, then for `--seconds` sends `--rate` GET /v1/jobs/{id} per
second (open loop: requests are scheduled at a fixed rate whatever the latency) and, a few
seconds in, `--uploads` concurrent uploads. Reports offered vs served requests, those
shed (503/429, answered at once by api/shed.py) and their latency, errors, latency
percentiles of the served ones, how late the client itself sent requests, and the API's
RSS into bench/results/load.json.

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


class _Conn:
    """One keep-alive HTTP/1.1 connection speaking just enough for `GET path`: the load
    client must cost far less CPU than the server it measures (httpx spends about a
    millisecond a request, which on 2 shared cores made the client the bottleneck)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status


async def _status_load(
    base: str, path: str, rate: float, seconds: float
) -> list[tuple[float, int, float]]:
    """Open-loop GETs: one every 1/rate s, each on a free keep-alive connection (a new
    one when all are busy); returns (latency s, status or 0 on error, how late the
    client sent it against the schedule s)."""
    host, port = base.split("://", 1)[1].split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    idle: list[_Conn] = []
    results: list[tuple[float, int, float]] = []

    async def one(due: float) -> None:
        t0 = time.perf_counter()
        late = t0 - due
        conn = None
        try:
            status = None
            while idle and status is None:
                # A keep-alive connection the server closed while idle (uvicorn: 5 s) is
                # dropped and the request repeated, as any HTTP client does for a GET.
                conn = idle.pop()
                try:
                    status = await asyncio.wait_for(conn.get(request), 30)
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.writer.close()
                    conn = None
            if status is None:
                conn = _Conn(*await asyncio.open_connection(host, int(port)))
                status = await asyncio.wait_for(conn.get(request), 30)
            results.append((time.perf_counter() - t0, status, late))
            idle.append(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            results.append((time.perf_counter() - t0, 0, late))
            if conn is not None:
                conn.writer.close()

    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
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
        print(f"training job {job} submitted; load starts", file=sys.stderr, flush=True)
        await asyncio.sleep(2)
        before = (await client.get(f"/v1/jobs/{job}")).json()
        rss: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_rss(api, stop, rss))
        t0 = time.perf_counter()
        gets, ups = await asyncio.gather(
            _status_load(base, f"/v1/jobs/{job}", args.rate, args.seconds),
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
    lat = [t for t, c, _ in gets if c == 200]
    shed = [t for t, c, _ in gets if c in (429, 503)]
    errors = sum(1 for _t, c, _ in gets if c not in (200, 429, 503))
    late = [d for _t, _c, d in gets]
    up_lat = [t for t, c, _ in ups if c == 202]

    def pcts(v: list[float]) -> dict[str, float | None]:
        return {
            "p50": round(_pct(v, 50), 2) if v else None,
            "p90": round(_pct(v, 90), 2) if v else None,
            "p99": round(_pct(v, 99), 2) if v else None,
            "max": round(max(v) * 1000, 2) if v else None,
        }

    return {
        "requests": len(gets),
        "offered_rate": args.rate,
        "seconds": args.seconds,
        "wall_seconds": round(wall, 2),
        "served": len(lat),
        "served_rate": round(len(lat) / wall, 1),
        "served_share": round(len(lat) / max(1, len(gets)), 4),
        "shed": len(shed),
        "errors": errors,
        "error_rate": errors / max(1, len(gets)),
        "status_codes": {
            str(c): sum(1 for _t, x, _ in gets if x == c) for c in {c for _t, c, _ in gets}
        },
        "latency_ms": pcts(lat),
        "shed_latency_ms": pcts(shed),
        "client_send_delay_ms": pcts(late),
        "uploads": {
            "n": len(ups),
            "accepted": len(up_lat),
            "errors": len(ups) - len(up_lat),
            "status_codes": {
                str(c): sum(1 for _t, x, _ in ups if x == c) for c in {c for _t, c, _ in ups}
            },
            "bytes_each": len(video),
            "latency_ms": {"p50": round(_pct(up_lat, 50), 1), "max": round(_pct(up_lat, 100), 1)},
        },
        "api_rss_mb": {
            "start": round(rss[0], 1) if rss else None,
            "max": round(max(rss), 1) if rss else None,
            "end": round(rss[-1], 1) if rss else None,
        },
        "training_job": {
            "status_at_start": before["status"],
            "clips_done_at_start": before["clips_done"],
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
    p.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the service (repeatable)"
    )
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.fixtures.media import make_video

    with tempfile.TemporaryDirectory(prefix="uarnvc-load-") as tmp:
        video = make_video(Path(tmp) / "v.mkv", frames=24).read_bytes()
        port = _free_port()
        # The embedded defaults otherwise: workers at niceness 10 with all cores but one
        # for torch (worker/cli.py), shedding on (api/shed.py).
        env = {
            **os.environ,
            "UARNVC_RATE_LIMIT": "0",
            "UARNVC_LOG_LEVEL": "WARNING",
            **dict(kv.split("=", 1) for kv in args.env),
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
            print(f"service up on port {port}", file=sys.stderr, flush=True)
            main_ = run(args, f"http://127.0.0.1:{port}", psutil.Process(proc.pid), video)
            try:
                import uvloop

                report = uvloop.run(main_)
            except ImportError:
                report = asyncio.run(main_)
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
    report["service_env"] = dict(kv.split("=", 1) for kv in args.env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
