"""Every worker SIGKILLed mid-clip, with the DEFAULT recovery settings (no shortened
visibility timeout or lease): a new worker's reaper (worker/reaper.py) re-queues the clip
once its lease lapses, the job completes in minutes rather than the broker's 6 hours, and
the dead worker's message is not left waiting in Redis for the visibility timeout."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis

from core.codec.bitstream import read_stream
from core.settings import Settings
from tests.e2e.test_faults import OPTS, submit, training, wait_done
from tests.e2e.test_service import _client, _scaled_env, _start_api, _start_worker
from tests.fixtures.media import make_video
from tests.fixtures.servers import Processes, poll

pytestmark = pytest.mark.e2e


def _unacked_of(r: redis.Redis, job: str) -> list[str]:
    """Messages for this job that Redis holds for redelivery after the visibility timeout."""
    return [v.decode() for v in r.hvals("unacked") if job.encode() in v]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_all_workers_killed_mid_clip_default_settings(
    processes: Processes,
    tmp_path: Path,
    redis_url: str,
    moto_endpoint: str,
    s3_bucket: str,
) -> None:
    defaults = Settings()
    assert defaults.visibility_timeout == 6 * 3600 and defaults.lease_seconds == 30
    redis_db = redis_url.rsplit("/", 1)[0] + "/5"
    env = _scaled_env(redis_db, moto_endpoint, s3_bucket, tmp_path / "api")
    assert not any(k in env for k in ("UARNVC_VISIBILITY_TIMEOUT", "UARNVC_LEASE_SECONDS"))
    env["UARNVC_TORCH_THREADS"] = "1"  # two trainers on 2 cores; no recovery setting
    port = _start_api(processes, env, key=None)
    workers = [
        _start_worker(processes, name, env, "cpu,gpu", tmp_path / name) for name in ("w1", "w2")
    ]
    source = make_video(tmp_path / "src.mkv", 24, 160, 120)
    r = redis.Redis.from_url(redis_db)
    with _client(port) as client:
        job = submit(client, source, seed="3")
        poll(lambda: training(client, job, 1), 600, 0.1, "clip 1 to train")
        for w in workers:
            os.killpg(w.pid, signal.SIGKILL)
        for w in workers:
            w.wait(10)
        killed = time.monotonic()
        assert _unacked_of(r, job), "the dead worker's message should be unacknowledged"

        # Until the lease lapses the clip counts as running; then the job says it waits
        # for a worker (status queued), not running.
        def waiting() -> dict | None:
            st = client.get(f"/v1/jobs/{job}").json()
            return st if st["status"] == "queued" else None

        st = poll(waiting, 90, 0.5, "the job to wait for a worker")
        assert st["clips_done"] == 1 and st["clips"][1]["status"] == "pending", st
        waited = time.monotonic() - killed
        assert waited >= 20, waited  # the 30 s lease, renewed within the last second or so

        _start_worker(processes, "w3", env, "cpu,gpu", tmp_path / "w3")
        started = time.monotonic()
        poll(lambda: training(client, job, 1), 120, 0.2, "clip 1 to train again")
        resumed = time.monotonic() - started
        check_complete_default(client, job)
        total = time.monotonic() - killed
    log = processes.log("w3")
    assert "lapsed" in log and "re-queued" in log, log[-3000:]
    # The dead worker's copy was dropped, not left for Redis to redeliver in 6 hours.
    assert _unacked_of(r, job) == [], _unacked_of(r, job)
    print(
        f"\nkilled both workers mid-clip 1: status queued after {waited:.0f} s; a new worker "
        f"trained clip 1 again {resumed:.0f} s after it started; job done {total:.0f} s after "
        "the kill (default settings: visibility timeout 6 h, lease 30 s, sweep 10 s)"
    )
    assert resumed < 120


def check_complete_default(client: httpx.Client, job: str) -> None:
    """Every clip done once and the stream whole and decodable."""
    st = wait_done(client, job)
    assert [c["status"] for c in st["clips"]] == ["done"] * st["clips_total"]
    assert st["clips_total"] == int(OPTS["frames"]) // int(OPTS["clip_length"])
    header, chunks = read_stream(io.BytesIO(client.get(f"/v1/jobs/{job}/bitstream").content))
    assert len(list(chunks)) == header.num_clips == st["clips_total"]
