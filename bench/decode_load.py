"""Status latency while `/decode` renders videos in the API process: a benchmark, not a test.

Starts `uarnvc api` (no worker), encodes one job into its store from this process (the
worker's code, tiny step count: decoding cost does not depend on it), then measures
another tenant's `GET /v1/jobs/{id}` latency, first alone and then while `--decoders`
clients decode the job back to back (`/decode?format=mp4`). Results go to
bench/results/decode_load.json.

    .venv/bin/python -m bench.decode_load                   # 2 decoders, 20 s
    .venv/bin/python -m bench.decode_load --repo /path/to/another/checkout   # compare

`--repo` runs the API from another checkout of this repository (same virtualenv), to
measure the code before a change on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.load import _free_port, _wait
from bench.machine import machine_info

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "decode_load.json"
VIDEO = REPO.parent / "shared" / "data" / "bigbuckbunny.mp4"


def _encode(data: Path, job: str) -> float:
    from core.settings import Settings
    from core.storage import LocalStore
    from worker import pipeline

    settings = Settings(data_dir=data)
    store = LocalStore(data / "store")
    queue: list[tuple[str, list]] = [("split", [job])]
    t0 = time.perf_counter()
    while queue:
        kind, args = queue.pop(0)
        step = pipeline.split if kind == "split" else pipeline.encode
        step(store, settings, *args, lambda k, a: queue.append((k, a)))
    return time.perf_counter() - t0


def _poll(c: httpx.Client, path: str, seconds: float) -> list[float]:
    times: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        r = c.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text
        time.sleep(0.02)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {
        "n": len(s),
        "p50_ms": round(1000 * statistics.median(s), 1),
        "p99_ms": round(1000 * s[max(0, int(0.99 * len(s)) - 1)], 1),
        "max_ms": round(1000 * s[-1], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decoders", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--width", default="320")
    ap.add_argument("--frames", default="128")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout the API runs from")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="decode-load-"))
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(args.repo),
        "UARNVC_DATA_DIR": str(tmp / "data"),
        "UARNVC_API_KEYS": "alice,bob",
        "UARNVC_RATE_LIMIT": "0",
    }
    log = open(tmp / "api.log", "wb")  # noqa: SIM115 - lives with the process
    api = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
        cwd=args.repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"machine": machine_info("bench.decode_load")}
    try:
        _wait(f"{base}/healthz")
        alice = httpx.Client(base_url=base, headers={"Authorization": "Bearer alice"}, timeout=120)
        bob = httpx.Client(base_url=base, headers={"Authorization": "Bearer bob"}, timeout=120)
        opts = {"width": args.width, "frames": args.frames, "steps": "5", "clip_length": "16"}
        with open(VIDEO, "rb") as f:
            r = alice.post("/v1/jobs", files={"file": (VIDEO.name, f)}, data=opts)
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        with open(VIDEO, "rb") as f:
            r = bob.post("/v1/jobs", files={"file": (VIDEO.name, f)}, data={**opts, "frames": "16"})
        theirs = r.json()["id"]
        encode_s = _encode(tmp / "data", job)
        st = alice.get(f"/v1/jobs/{job}").json()
        assert st["status"] == "succeeded", st["status"]
        for _ in range(20):
            bob.get(f"/v1/jobs/{theirs}")
        idle = _poll(bob, f"/v1/jobs/{theirs}", 8)

        stop = threading.Event()
        done: list[float] = []
        refused: list[int] = []

        def decode_loop() -> None:
            with httpx.Client(
                base_url=base, headers={"Authorization": "Bearer alice"}, timeout=300
            ) as c:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = c.get(f"/v1/jobs/{job}/decode?format=mp4")
                    if r.status_code == 429:
                        refused.append(1)
                        stop.wait(1)
                        continue
                    assert r.status_code == 200 and len(r.content) > 1000, r.status_code
                    done.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=decode_loop) for _ in range(args.decoders)]
        for t in threads:
            t.start()
        time.sleep(1)
        loaded = _poll(bob, f"/v1/jobs/{theirs}", args.seconds)
        stop.set()
        for t in threads:
            t.join(300)
        result.update(
            {
                "video": f"{VIDEO.name} at width {args.width}, {st['clips_total']} clips, "
                f"{sum(c['frames'] for c in st['clips'])} frames",
                "api_repo": str(args.repo),
                "encode_seconds": round(encode_s, 1),
                "decoders": args.decoders,
                "status_idle": _summary(idle),
                "status_during_decodes": _summary(loaded),
                "decodes_completed": len(done),
                "decode_seconds_median": round(statistics.median(done), 2) if done else None,
                "decodes_refused_429": len(refused),
            }
        )
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(20)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
