"""Encode-time estimates in the service: eta_seconds and started_at in the job status, and
the refusal of jobs estimated over UARNVC_MAX_ENCODE_SECONDS."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.client_cli import _summary
from api.status_cache import MAX_STALE
from core.codec.chain import plan_stream
from core.codec.estimate import estimate
from core.jobs import JobOptions, JobStatus
from core.settings import API_MAX_ENCODE_SECONDS, Settings
from core.video import probe
from tests.api.conftest import (
    TINY,
    AppFactory,
    post_video,
    queued_messages,
    run_inline,
    store_keys,
    tmp_files,
)


def _status(client: TestClient, job: str) -> dict:
    # Past the status cache's stale window (poll_interval 0.05 x MAX_STALE): an older
    # entry is served while it refreshes in the background.
    time.sleep(0.05 * (MAX_STALE + 1))
    r = client.get(f"/v1/jobs/{job}")
    assert r.status_code == 200, r.text
    return r.json()


def test_status_carries_eta_from_the_estimate_then_from_measured_clips(
    client: TestClient, small_video: Path
) -> None:
    r = post_video(client, small_video)
    assert r.status_code == 202, r.text
    body = r.json()
    job = body["id"]
    assert body["started_at"] is None  # no worker yet
    assert body["estimate_seconds"] > 0
    assert body["eta_seconds"] == pytest.approx(body["estimate_seconds"], rel=0.05)
    assert "ETA" in _summary(JobStatus.model_validate(body))

    run_inline(client, job, steps=2)  # split, then clip 0 of 3
    st = _status(client, job)
    assert st["status"] == "running" and st["started_at"] is not None
    clip0 = st["clips"][0]["seconds"]
    assert clip0 > 0
    assert st["eta_seconds"] == pytest.approx(2 * clip0, abs=0.15)  # two clips left

    run_inline(client, job)
    st = _status(client, job)
    assert st["status"] == "succeeded" and st["eta_seconds"] == 0.0
    assert st["started_at"] is not None
    listed = client.get("/v1/jobs").json()["jobs"][0]
    assert listed["eta_seconds"] == 0.0


def test_job_over_the_time_limit_is_refused_before_anything_is_stored(
    make_client: AppFactory, small_video: Path
) -> None:
    # The same estimate the API will make (this process's calibration cache).
    opts = JobOptions.model_validate(TINY).to_encode_options("cpu")
    est = estimate(plan_stream(probe(small_video), opts), opts)
    limit = round(est.seconds * 0.5, 3)
    client = make_client(max_encode_seconds=limit)
    r = post_video(client, small_video)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith(":job-too-long")
    assert body["estimate_seconds"] == pytest.approx(est.seconds, abs=0.1)
    assert body["estimate_seconds"] > body["limit_seconds"] == limit
    assert body["estimate"]["clips"] == 3 and body["estimate"]["steps"] == 5
    assert "these options would fit" in body["detail"]
    fits = {next(iter(f["options"])): f for f in body["fits"]}
    assert fits["frames"]["options"]["frames"] == 4  # one clip of 4 frames
    assert all(f["estimate_seconds"] <= limit for f in body["fits"])
    # Nothing stored, spooled or queued.
    assert store_keys(client) == []
    assert tmp_files(client) == []
    assert queued_messages(client) == []


def test_the_limit_is_off_for_the_cli_and_six_hours_for_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UARNVC_MAX_ENCODE_SECONDS", raising=False)
    s = Settings()
    assert s.api_max_encode_seconds == API_MAX_ENCODE_SECONDS == 6 * 3600
    assert s.cli_max_encode_seconds is None
    monkeypatch.setenv("UARNVC_MAX_ENCODE_SECONDS", "0")
    s = Settings()
    assert s.api_max_encode_seconds is None and s.cli_max_encode_seconds is None
    monkeypatch.setenv("UARNVC_MAX_ENCODE_SECONDS", "600")
    s = Settings()
    assert s.api_max_encode_seconds == s.cli_max_encode_seconds == 600
