"""Faults caused for real (docs/reliability.md): SIGKILLed workers (mid-clip, during split, over
and over), a restarted Redis, a frozen S3 server. Each test runs its own redis-server and
moto_server so it can stop them; the API and workers are the real processes.

Short versions run in the default suite; the `@slow` ones (`make soak`) repeat the faults.
Extends tests/e2e/test_service.py (whose single mid-clip kill stays there).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.status_cache import MAX_STALE
from core.codec.bitstream import read_stream
from tests.e2e.test_service import _client, _start_worker
from tests.fixtures.media import make_video
from tests.fixtures.servers import (
    REPO,
    S3_ENV,
    Processes,
    free_port,
    poll,
    service_cmd,
    wait_http,
    wait_port,
)
from tests.fuzz.uarv import decode_all

pytestmark = pytest.mark.e2e
# 6 clips of 4 frames at 48x36; a handful of seconds each on 2 shared cores.
OPTS = {"steps": "300", "params": "6000", "clip_length": "4", "frames": "24", "width": "48"}
JOB_TIMEOUT = 420


@dataclass
class Rig:
    """One private deployment: its own redis and moto, an API, a bucket, worker env."""

    processes: Processes
    tmp: Path
    redis: subprocess.Popen
    redis_port: int
    redis_dir: Path
    moto: subprocess.Popen
    moto_port: int
    bucket: str
    env: dict[str, str]
    api_port: int = 0
    n_workers: int = 0

    def start_redis(self) -> None:
        self.redis = self.processes.start(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                # The broker's queue must survive a restart: append-only file, fsync on
                # every write (what a production Redis for Celery should run with).
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.redis_dir),
            ],
        )
        wait_port(self.redis_port, 20, self.redis)

    def start_worker(self) -> subprocess.Popen:
        self.n_workers += 1
        name = f"w{self.n_workers}"
        return _start_worker(self.processes, name, self.env, "cpu,gpu", self.tmp / name)

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{self.moto_port}", region_name="us-east-1"
        )

    def keys(self, job: str) -> list[str]:
        got = self.s3().list_objects_v2(Bucket=self.bucket, Prefix=f"svc/jobs/{job}/")
        return [o["Key"].split(f"{job}/", 1)[1] for o in got.get("Contents", [])]


@pytest.fixture
def rig(processes: Processes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    moto_exe = Path(sys.executable).with_name("moto_server")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    moto_port = free_port()
    moto = processes.start("moto", [str(moto_exe), "-H", "127.0.0.1", "-p", str(moto_port)])
    wait_http(f"http://127.0.0.1:{moto_port}/", 60, moto)
    redis_port = free_port()
    (tmp_path / "redis").mkdir()
    r = Rig(
        processes, tmp_path, None, redis_port, tmp_path / "redis", moto, moto_port, "faults", {}
    )  # type: ignore[arg-type]
    r.start_redis()
    r.s3().create_bucket(Bucket=r.bucket)
    r.env = {
        **S3_ENV,
        "UARNVC_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "UARNVC_STORE_URL": f"s3://{r.bucket}/svc",
        "UARNVC_S3_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "UARNVC_DATA_DIR": str(tmp_path / "api"),
        "UARNVC_POLL_INTERVAL": "0.2",
        # Recover in seconds: unacked tasks come back after 10 s, leases lapse after 4 s.
        "UARNVC_VISIBILITY_TIMEOUT": "10",
        "UARNVC_LEASE_SECONDS": "4",
        "UARNVC_TORCH_THREADS": "1",  # same kernels in every worker: comparable bytes
        "UARNVC_RATE_LIMIT": "0",
    }
    r.api_port = free_port()
    api = processes.start("api", service_cmd("api", "--port", str(r.api_port)), r.env)
    wait_http(f"http://127.0.0.1:{r.api_port}/healthz", 90, api)
    yield r


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames at 640x480: big enough that split takes a moment to catch it in."""
    return make_video(tmp_path_factory.mktemp("faults") / "src.mkv", 24, 640, 480)


def submit(client: httpx.Client, video: Path, **extra: str) -> str:
    with open(video, "rb") as f:
        r = client.post("/v1/jobs", files={"file": (video.name, f)}, data={**OPTS, **extra})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def wait_done(client: httpx.Client, job: str, timeout: float = JOB_TIMEOUT) -> dict:
    def finished() -> dict | None:
        try:
            st = client.get(f"/v1/jobs/{job}").json()
        except httpx.HTTPError:
            return None
        return st if st.get("status") in ("succeeded", "failed", "cancelled") else None

    st = poll(finished, timeout, 0.5, f"job {job} to finish")
    assert st["status"] == "succeeded", st
    return st


def check_complete(rig: Rig, client: httpx.Client, job: str) -> bytes:
    """Every clip present exactly once, the stream whole and decodable; its bytes."""
    st = wait_done(client, job)
    n = st["clips_total"]
    assert [c["status"] for c in st["clips"]] == ["done"] * n
    names = sorted(k for k in rig.keys(job) if k.startswith("clips/"))
    assert names == sorted(
        [f"clips/{k}.uarc" for k in range(n)] + [f"clips/{k}.json" for k in range(n)]
    )
    data = client.get(f"/v1/jobs/{job}/bitstream").content
    header, chunks = read_stream(io.BytesIO(data))
    assert len(list(chunks)) == n == header.num_clips
    assert decode_all(data) == header.frames == int(OPTS["frames"])
    return data


def kill_when(rig: Rig, worker: subprocess.Popen, what: str, cond) -> None:
    poll(cond, JOB_TIMEOUT, 0.01, what)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)


def in_split(rig: Rig, job: str) -> bool:
    ks = rig.keys(job)
    return any(k.startswith("frames/") for k in ks) and "plan.json" not in ks


def training(client: httpx.Client, job: str, k: int) -> bool:
    st = client.get(f"/v1/jobs/{job}").json()
    assert st["status"] not in ("failed", "succeeded"), st
    clip = st["clips"][k] if len(st["clips"]) > k else None
    return bool(clip and clip["status"] == "running" and (clip["progress"] or 0) < 0.6)


def trained_clips(rig: Rig) -> list[str]:
    return [
        line
        for w in range(1, rig.n_workers + 1)
        for line in rig.processes.log(f"w{w}").splitlines()
        if " done (psnr" in line
    ]


def run_with_kills(rig: Rig, source: Path, kill_clips: list[int]) -> None:
    """Kill a worker during split and then while each clip in `kill_clips` trains; the
    job must finish, complete and byte-identical to an undisturbed run (same seed)."""
    with _client(rig.api_port) as client:
        worker = rig.start_worker()
        job = submit(client, source, seed="7")
        kill_when(rig, worker, "split to be under way", lambda: in_split(rig, job))
        assert "plan.json" not in rig.keys(job)
        for k in kill_clips:
            worker = rig.start_worker()
            kill_when(rig, worker, f"clip {k} to train", lambda k=k: training(client, job, k))
        rig.start_worker()
        disturbed = check_complete(rig, client, job)
        commits = [ln for ln in trained_clips(rig) if f"job {job}" in ln]
        assert len(commits) == 6, commits  # each clip committed once, by one worker

        calm = submit(client, source, seed="7")
        undisturbed = check_complete(rig, client, calm)
    assert disturbed == undisturbed


def test_worker_killed_during_split_and_mid_clip(rig: Rig, source: Path) -> None:
    run_with_kills(rig, source, [2])


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_worker_killed_repeatedly(rig: Rig, source: Path) -> None:
    run_with_kills(rig, source, [0, 1, 3, 5])


# --------------------------------------------------------------------------- Redis


def assert_503(r: httpx.Response) -> dict:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    return r.json()


def test_redis_restarted_mid_job(rig: Rig, source: Path) -> None:
    with _client(rig.api_port) as client:
        rig.start_worker()
        job = submit(client, source)
        poll(lambda: training(client, job, 1), JOB_TIMEOUT, 0.1, "clip 1 to train")
        rig.processes.stop(rig.redis, signal.SIGKILL)  # no shutdown save: the AOF is it
        ready = client.get("/readyz")
        body = assert_503(ready) if ready.status_code == 503 else ready.json()
        assert body["checks"]["broker"].startswith("unavailable"), body
        assert body["checks"]["store"] == "ok"
        with open(source, "rb") as f:
            refused = client.post("/v1/jobs", files={"file": ("x.mkv", f)}, data=OPTS)
        assert assert_503(refused)["type"] == "urn:uarnvc:problem:unavailable"
        assert client.get(f"/v1/jobs/{job}").status_code == 200  # the store still answers
        time.sleep(3)
        rig.start_redis()
        poll(lambda: client.get("/readyz").status_code == 200, 60, 0.5, "readyz after redis")
        check_complete(rig, client, job)
        assert len(client.get("/v1/jobs").json()["jobs"]) == 1  # the refused one left nothing


# ------------------------------------------------------------------------------ S3


def test_s3_frozen_mid_job(rig: Rig, source: Path) -> None:
    """SIGSTOP keeps moto's in-memory state (a restart would lose the bucket) while every
    connection to it hangs, the nastiest kind of outage for clients."""
    with _client(rig.api_port) as client:
        rig.start_worker()
        job = submit(client, source)
        poll(lambda: training(client, job, 1), JOB_TIMEOUT, 0.1, "clip 1 to train")
        rig.moto.send_signal(signal.SIGSTOP)
        try:
            # A status younger than the poll interval (0.2 s here) is answered from the
            # API's cache, and a stale one too for up to MAX_STALE intervals while one
            # refresh runs (api/status_cache.py): wait both out so the store is asked.
            time.sleep(0.2 * (MAX_STALE + 2))
            t0 = time.monotonic()
            first = client.get(f"/v1/jobs/{job}", timeout=60)
            first_s = time.monotonic() - t0
            assert_503(first)
            print(f"\nfrozen S3: first request answered 503 after {first_s:.1f} s")
            assert first_s < 25, first_s  # bounded by the API's fail-fast S3 client
            t0 = time.monotonic()
            assert_503(client.get(f"/v1/jobs/{job}/clips/0"))
            # The breaker answers at once: not after the store client's timeouts (the
            # first request's bound above); the slack is for a loaded 2-core machine.
            assert time.monotonic() - t0 < 3.0
            body = assert_503(client.get("/readyz", timeout=30))
            assert body["checks"]["store"].startswith("unavailable"), body
            time.sleep(4)
        finally:
            rig.moto.send_signal(signal.SIGCONT)
        poll(lambda: client.get("/readyz").status_code == 200, 60, 0.5, "readyz after S3")
        check_complete(rig, client, job)


# ------------------------------------------------------------------- lease, in process


def test_redelivered_copy_does_not_fork_the_chain(tmp_path: Path) -> None:
    """A copy of encode(k) delivered while the first copy trains neither trains nor
    queues anything (LeaseBusy); retried after the first commits while k+1 trains, it
    finds the chunk and does nothing: one chain, one training per clip."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.settings import Settings
    from tests.api.conftest import post_video, run_inline
    from worker import pipeline

    video = make_video(tmp_path / "v.mkv")
    s = Settings(data_dir=tmp_path / "data", lease_seconds=30)
    with TestClient(create_app(s), base_url="http://127.0.0.1") as c:
        job = post_video(c, video).json()["id"]
        run_inline(c, job, steps=1)  # split only
        store = c.app.state.store.inner
        first: list = []
        dup: list = []
        started = threading.Event()

        def first_copy(k: int) -> None:
            def enq(kind: str, a: list) -> None:
                first.append((kind, a))

            started.set()
            pipeline.encode(store, s, job, k, enq, holder="first")

        t = threading.Thread(target=first_copy, args=(0,))
        t.start()
        started.wait()
        poll(lambda: store.exists(f"jobs/{job}/lease/0"), 30, 0.01, "the lease")
        with pytest.raises(pipeline.LeaseBusy):
            pipeline.encode(store, s, job, 0, lambda *a: dup.append(a), holder="copy")
        t.join(120)
        assert first == [("encode", [job, 1])] and dup == []
        # The chain moves on: clip 1 trains (leased) when the copy's retry comes.
        t1 = threading.Thread(target=first_copy, args=(1,))
        t1.start()
        poll(lambda: store.exists(f"jobs/{job}/lease/1"), 30, 0.01, "the lease of clip 1")
        assert pipeline.encode(store, s, job, 0, lambda *a: dup.append(a), holder="copy") is None
        t1.join(120)
        assert dup == [], dup  # no second chain
        assert first == [("encode", [job, 1]), ("encode", [job, 2])]
        assert store.exists(f"jobs/{job}/clips/0.uarc") and store.exists(f"jobs/{job}/clips/1.uarc")
    assert REPO.exists()
