"""The issue's "must show", as a new user would check it: real processes, real servers.

1. `uarnvc serve` (embedded: local store, filesystem broker, one worker subprocess).
2. `uarnvc api` + two `uarnvc worker` processes on Redis and an S3 server (moto).
3. A worker SIGKILLed mid-clip; a new worker finishes the job with every clip present.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from core.codec.bitstream import read_stream
from core.video import iter_frames, read_frames
from tests.fixtures.servers import (
    REPO,
    S3_ENV,
    Processes,
    free_port,
    poll,
    service_cmd,
    uarnvc_cmd,
    wait_http,
)

pytestmark = pytest.mark.e2e
# Small enough for 2 CPUs, slow enough (a few seconds a clip) to watch a job run.
OPTS = {"steps": "40", "params": "6000", "clip_length": "4", "frames": "12", "width": "48"}
JOB_TIMEOUT = 240


def submit(client: httpx.Client, video: Path, **extra: str) -> str:
    with open(video, "rb") as f:
        r = client.post("/v1/jobs", files={"file": (video.name, f)}, data={**OPTS, **extra})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()["id"]


def wait_done(client: httpx.Client, job: str, timeout: float = JOB_TIMEOUT) -> dict:
    def finished():
        st = client.get(f"/v1/jobs/{job}").json()
        return st if st["status"] in ("succeeded", "failed", "cancelled") else None

    st = poll(finished, timeout, 0.5, f"job {job} to finish")
    assert st["status"] == "succeeded", st
    return st


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of per-frame RGB PSNR, computed here independently of core.metrics."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean([math.inf if m == 0 else 10 * math.log10(255**2 / m) for m in mse]))


def decode_cmd(src: Path, dst: Path) -> list[str]:
    """`uarnvc decode` in a fresh process (the library helper if the CLI is not there)."""
    cmd = uarnvc_cmd("decode", str(src), "-o", str(dst))
    if cmd[1:3] == ["-m", "worker.cli"]:
        return [sys.executable, "-m", "tests.e2e.decode_uarv", str(src), str(dst)]
    return cmd


def must_show(client: httpx.Client, video: Path, tmp: Path) -> str:
    """POST -> 202; while running, clips_done >= 1 and that chunk downloads; the finished
    bitstream decodes (separate process) to the right frames and the API's PSNR;
    /decode?format=mkv streams the same frames."""
    job = submit(client, video)
    held: dict[str, bytes] = {}

    def running_with_a_clip():
        st = client.get(f"/v1/jobs/{job}").json()
        assert st["status"] not in ("failed", "cancelled"), st
        return st if st["clips_done"] >= 1 else None

    st = poll(running_with_a_clip, JOB_TIMEOUT, 0.1, "the first clip")
    early_chunk = client.get(f"/v1/jobs/{job}/clips/0")
    assert early_chunk.status_code == 200 and len(early_chunk.content) > 0
    was_running = st["status"] == "running"

    def download_while_running() -> None:  # the bitstream, held open until the end
        with client.stream("GET", f"/v1/jobs/{job}/bitstream", timeout=JOB_TIMEOUT) as r:
            held["bitstream"] = r.read()

    t = threading.Thread(target=download_while_running)
    t.start()
    final = wait_done(client, job)
    t.join(60)
    assert was_running, "the job finished before it could be watched running"
    assert final["clips_done"] == final["clips_total"] == 3
    assert all(c["status"] == "done" and c["bytes"] > 0 for c in final["clips"])

    bitstream = client.get(f"/v1/jobs/{job}/bitstream").content
    assert held["bitstream"] == bitstream  # the held-open download is the whole stream
    _header, chunks = read_stream(io.BytesIO(bitstream))
    assert next(chunks) == early_chunk.content

    (tmp / "out.uarv").write_bytes(bitstream)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.e2e.decode_uarv",
            str(tmp / "out.uarv"),
            str(tmp / "dec.mkv"),
        ],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    decoded = read_frames(tmp / "dec.mkv")
    assert decoded.shape == (12, decoded.shape[1], 48, 3)
    reference = np.stack(list(iter_frames(video, frames=12, width=48)))
    assert abs(psnr(reference, decoded) - final["psnr"]) < 0.05, (
        psnr(reference, decoded),
        final["psnr"],
    )

    (tmp / "stream.mkv").write_bytes(client.get(f"/v1/jobs/{job}/decode?format=mkv").content)
    assert np.array_equal(read_frames(tmp / "stream.mkv"), decoded)
    return job


def _client(port: int, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60)


def test_embedded_serve(processes: Processes, pens: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = processes.start(
        "serve",
        service_cmd(
            "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--verbose"
        ),
        {"UARNVC_POLL_INTERVAL": "0.2"},
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
    with _client(port) as client:
        assert client.get("/readyz").status_code == 200
        must_show(client, pens, tmp_path)
    assert "no API keys configured" in processes.log("serve")
    # Everything lives under the data dir: nothing leaked elsewhere.
    assert (tmp_path / "data" / "store" / "jobs").is_dir()


def _scaled_env(redis_url: str, endpoint: str, bucket: str, data: Path) -> dict[str, str]:
    return {
        **S3_ENV,
        "UARNVC_BROKER_URL": redis_url,
        "UARNVC_STORE_URL": f"s3://{bucket}/uarnvc",
        "UARNVC_S3_ENDPOINT_URL": endpoint,
        "UARNVC_DATA_DIR": str(data),
        "UARNVC_POLL_INTERVAL": "0.2",
    }


def _start_api(processes: Processes, env: dict[str, str], key: str | None) -> int:
    port = free_port()
    if key:
        env = {**env, "UARNVC_API_KEYS": key}
    proc = processes.start("api", service_cmd("api", "--port", str(port)), env)
    wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
    return port


def _start_worker(processes: Processes, name: str, env: dict[str, str], queues: str, data: Path):
    return processes.start(
        name,
        service_cmd("worker", "--queues", queues, "--hostname", f"{name}@%h"),
        {**env, "UARNVC_DATA_DIR": str(data)},
    )


def test_api_and_two_workers_on_redis_and_s3(
    processes: Processes,
    pens: Path,
    tmp_path: Path,
    redis_url: str,
    moto_endpoint: str,
    s3_bucket: str,
) -> None:
    import boto3

    redis_db = redis_url.rsplit("/", 1)[0] + "/1"  # a db of its own on the shared server
    env = _scaled_env(redis_db, moto_endpoint, s3_bucket, tmp_path / "api")
    port = _start_api(processes, env, key="secret-key")
    _start_worker(processes, "w1", env, "cpu,gpu", tmp_path / "w1")
    _start_worker(processes, "w2", env, "gpu", tmp_path / "w2")
    with _client(port, "secret-key") as client:
        assert client.get("/readyz").json()["checks"] == {"store": "ok", "broker": "ok"}
        second = submit(client, pens, seed="1")  # runs beside the watched one
        job = must_show(client, pens, tmp_path)
        wait_done(client, second)
        with _client(port, "another-key") as other:
            assert other.get(f"/v1/jobs/{job}").status_code == 401
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"uarnvc/jobs/{job}/clips/")
    names = sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))
    assert names == ["0.json", "0.uarc", "1.json", "1.uarc", "2.json", "2.uarc"]
    trained = [processes.log(w).count("done (psnr") for w in ("w1", "w2")]
    assert sum(trained) == 6, trained


def test_worker_sigkilled_mid_clip_is_replaced(
    processes: Processes,
    pens: Path,
    tmp_path: Path,
    redis_url: str,
    moto_endpoint: str,
    s3_bucket: str,
) -> None:
    redis_db = redis_url.rsplit("/", 1)[0] + "/2"
    env = {
        **_scaled_env(redis_db, moto_endpoint, s3_bucket, tmp_path / "api"),
        # Recover in seconds, not hours: redelivery of unacked tasks and lease expiry.
        "UARNVC_VISIBILITY_TIMEOUT": "6",
        "UARNVC_LEASE_SECONDS": "4",
    }
    port = _start_api(processes, env, key=None)
    w1 = _start_worker(processes, "w1", env, "cpu,gpu", tmp_path / "w1")
    with _client(port) as client:
        job = submit(client, pens, steps="80")

        def clip1_training():
            st = client.get(f"/v1/jobs/{job}").json()
            assert st["status"] not in ("failed", "succeeded"), st
            clip = st["clips"][1]  # kill early in the clip, not as it commits
            return clip["status"] == "running" and (clip["progress"] or 0) < 0.5

        poll(clip1_training, JOB_TIMEOUT, 0.1, "clip 1 to start training")
        os.killpg(w1.pid, signal.SIGKILL)
        w1.wait(10)
        st = client.get(f"/v1/jobs/{job}").json()
        assert st["clips_done"] == 1 and st["status"] == "running"
        _start_worker(processes, "w2", env, "cpu,gpu", tmp_path / "w2")
        final = wait_done(client, job)
        assert [c["status"] for c in final["clips"]] == ["done"] * 3
        assert all(c["bytes"] and c["psnr"] for c in final["clips"])
        bitstream = client.get(f"/v1/jobs/{job}/bitstream").content
        _header, chunks = read_stream(io.BytesIO(bitstream))
        assert len(list(chunks)) == 3
    assert "clip 1 done" in processes.log("w2")
