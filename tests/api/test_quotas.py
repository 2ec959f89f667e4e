"""Job quotas counted from the store: finished jobs give their slot back by themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from api.problems import Problem
from api.quotas import check_job_size, job_compute
from core.jobs import active_key, new_job_id, owner_id
from core.settings import Settings
from tests.api.conftest import AppFactory, post_video, run_inline
from tests.api.test_errors import assert_problem


def test_a_job_that_finishes_frees_its_slot(make_client: AppFactory, small_video: Path) -> None:
    c = make_client(max_active_jobs=1)
    job = post_video(c, small_video).json()["id"]
    assert_problem(post_video(c, small_video), 429, "too-many-jobs")
    run_inline(c, job)  # the worker's part: split and every clip
    assert c.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"
    assert post_video(c, small_video).status_code == 202
    store = c.app.state.store
    assert store.list(active_key(owner_id(None), "")) != []  # only the new one
    assert not store.exists(active_key(owner_id(None), job))  # pruned when counted


def test_failed_and_abandoned_jobs_are_pruned(make_client: AppFactory, small_video: Path) -> None:
    from core.jobs import mark_failed

    c = make_client(max_active_jobs=2)
    quotas = c.app.state.store
    job = post_video(c, small_video).json()["id"]
    mark_failed(quotas, job, "encode_failed", "simulated")
    # An entry whose job.json never appeared (its request died mid-way), long ago.
    ghost = new_job_id()
    old = json.dumps({"at": time.time() - 3600}).encode()
    quotas.put_bytes(active_key(owner_id(None), ghost), old)
    assert [post_video(c, small_video).status_code for _ in range(3)] == [202, 202, 429]
    assert not quotas.exists(active_key(owner_id(None), ghost))


def test_queued_means_not_split_yet(make_client: AppFactory, small_video: Path) -> None:
    c = make_client(max_queued_jobs=1, max_active_jobs=0)
    job = post_video(c, small_video).json()["id"]
    assert_problem(post_video(c, small_video), 429, "too-many-queued-jobs")
    run_inline(c, job, steps=1)  # split only: now running
    assert post_video(c, small_video).status_code == 202


def test_compute_budget_arithmetic() -> None:
    from core.codec.options import EncodeOptions

    class Header:
        width, height, num_clips = 320, 180, 10

    s = Settings(max_job_compute=1e9, max_clips_per_job=10)
    check_job_size(s, Header, EncodeOptions(steps=100, params=1_000_000))  # exactly 1e9
    with pytest.raises(Problem) as e:
        check_job_size(s, Header, EncodeOptions(steps=101, params=1_000_000))
    assert e.value.status == 422 and e.value.code == "job-too-large"
    # Unset params: the preset's budget for the frame size (fast: 1 per pixel).
    assert job_compute(10, 300, 320 * 180) == 172_800_000
    check_job_size(s, Header, EncodeOptions())
    with pytest.raises(Problem, match=r"10 clips x 2000 steps x 57600 parameters"):
        check_job_size(s, Header, EncodeOptions(steps=2000))
    Header.num_clips = 11
    with pytest.raises(Problem, match="11 clips exceed the limit of 10"):
        check_job_size(Settings(max_clips_per_job=10), Header, EncodeOptions())
    check_job_size(Settings(max_clips_per_job=0, max_job_compute=0), Header, EncodeOptions())
