"""Groups in the service: does a second worker halve a grouped job's wall time?

With `key_interval` set, each group of clips is a Celery chain of its own (worker/pipeline.py),
so N worker processes train N groups at once. This starts the embedded service
(`uarnvc serve`) with `--concurrency 1` and then 2, one torch thread per worker process, and
times the same job (4 groups) end to end through the HTTP API; it also checks that both runs
gave the same stream bytes. Results go to bench/results/service_groups.json.

    .venv/bin/python -m bench.service_groups            # pens.mp4, 64 frames at 160 px

Each worker process uses one core: on a 2-core machine the ideal ratio is 0.5.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from api.client import UarnvcClient
from bench.load import _free_port, _wait

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "service_groups.json"
DATA = REPO.parent / "shared" / "data"


def run_once(src: Path, options: dict[str, Any], concurrency: int) -> dict[str, Any]:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="uarnvc-groups-") as d:
        env = {**os.environ, "UARNVC_TORCH_THREADS": "1", "UARNVC_RATE_LIMIT": "0"}
        cmd = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)]
        cmd += ["--data-dir", d, "--concurrency", str(concurrency)]
        log = open(Path(d) / "serve.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base + "/readyz")
            with UarnvcClient(base, timeout=600) as client:
                t0 = time.perf_counter()
                job = client.submit(src, options)
                st = client.wait(job.id, timeout=3600)
                wall = time.perf_counter() - t0
                if st.status != "succeeded":
                    raise RuntimeError(f"job {job.id} ended {st.status}: {st.error}")
                out = Path(d) / "out.uarv"
                client.fetch_bitstream(job.id, out)
                digest = hashlib.sha256(out.read_bytes()).hexdigest()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
    print(f"concurrency {concurrency}: {wall:.1f} s, psnr {st.psnr:.2f}, sha256 {digest[:12]}")
    return {"concurrency": concurrency, "seconds": wall, "psnr": st.psnr, "sha256": digest}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", type=Path, default=DATA / "pens.mp4")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    options = {
        "frames": args.frames,
        "width": args.width,
        "steps": args.steps,
        "clip_length": 8,
        "key_interval": 2,  # 64 frames: 8 clips, 4 groups
    }
    runs = [run_once(args.video, options, c) for c in (1, 2)]
    ratio = runs[1]["seconds"] / runs[0]["seconds"]
    same = runs[0]["sha256"] == runs[1]["sha256"]
    print(f"two workers / one: {ratio:.2f} (ideal 0.5), same bytes: {same}")
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "video": args.video.name,
        "options": options,
        "runs": runs,
        "ratio_two_to_one": ratio,
        "same_bytes": same,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
