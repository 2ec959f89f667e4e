"""Job status is derived from the objects in the store: every state from its objects."""

from __future__ import annotations

import json
import time

import pytest

from core.jobs import Keys, cancel_job, mark_failed, new_job_id
from core.status import job_status
from core.storage import LocalStore
from tests.core.jobs_helpers import commit_clip, make_job, split_job


def test_status_lifecycle(store: LocalStore) -> None:
    job = make_job(store)
    st = job_status(store, job.id)
    assert st is not None and st.status == "queued" and st.clips_total == 3 and st.clips_done == 0
    assert [c.status for c in st.clips] == ["pending"] * 3

    split_job(store, job)
    commit_clip(store, job.id, 0, psnr=30.0, nbytes=100)
    store.put_bytes(
        Keys(job.id).lease(1),
        json.dumps({"holder": "w", "expires": time.time() + 60, "progress": 0.5}).encode(),
    )
    st = job_status(store, job.id)
    assert st.status == "running" and st.clips_done == 1
    assert [c.status for c in st.clips] == ["done", "running", "pending"]
    assert st.clips[1].progress == 0.5
    assert st.progress == pytest.approx(100 * 1.5 / 3, abs=0.01)
    assert st.psnr == pytest.approx(30.0)
    assert st.bpp == pytest.approx(8 * 100 / (4 * 8 * 4))
    assert st.clips[0].committed and not st.clips[1].committed

    commit_clip(store, job.id, 1, psnr=40.0, nbytes=50)
    commit_clip(store, job.id, 2, psnr=40.0, nbytes=50)
    st = job_status(store, job.id)
    assert st.status == "succeeded" and st.progress == 100 and st.bytes == 200
    # The mean of per-frame PSNR (the codec's definition): frame-weighted over clips.
    assert st.psnr == pytest.approx((4 * 30.0 + 4 * 40.0 + 2 * 40.0) / 10)


def test_chunk_without_metrics_is_not_done(store: LocalStore) -> None:
    """The chunk is the commit point but metrics land after it: until they do the clip
    (and the job) is still running, so success never comes with metrics missing."""
    job = make_job(store)
    split_job(store, job)
    for k in range(3):
        commit_clip(store, job.id, k, psnr=30.0, nbytes=10)
    store.delete(Keys(job.id).metrics(2))
    st = job_status(store, job.id)
    assert st.status == "running" and st.clips_done == 2
    assert st.clips[2].status == "running" and st.clips[2].committed


def test_expired_lease_is_not_running(store: LocalStore) -> None:
    job = make_job(store)
    split_job(store, job)
    store.put_bytes(Keys(job.id).lease(0), json.dumps({"expires": time.time() - 1}).encode())
    assert job_status(store, job.id).clips[0].status == "pending"


def test_failed_first_error_wins(store: LocalStore) -> None:
    job = make_job(store)
    mark_failed(store, job.id, "encode_failed", "clip 1: boom")
    mark_failed(store, job.id, "other", "later")
    st = job_status(store, job.id)
    assert st.status == "failed" and st.error.code == "encode_failed"
    assert st.error.detail == "clip 1: boom"


def test_cancel_deletes_data_keeps_tombstone(store: LocalStore) -> None:
    job = make_job(store)
    split_job(store, job)
    store.put_bytes(Keys(job.id).source, b"video")
    commit_clip(store, job.id, 0, 30.0, 10)
    cancel_job(store, job.id)
    assert sorted(store.list(Keys(job.id).prefix)) == sorted(
        [Keys(job.id).job, Keys(job.id).cancelled]
    )
    st = job_status(store, job.id)
    assert st.status == "cancelled" and st.clips_done == 0


def test_unknown_job_is_none(store: LocalStore) -> None:
    assert job_status(store, new_job_id()) is None
    assert job_status(store, "../../etc/passwd") is None
