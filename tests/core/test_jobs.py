"""Job status is derived from the objects in the store: every state from its objects."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.jobs import (
    InputInfo,
    Job,
    JobOptions,
    Keys,
    Plan,
    cancel_job,
    job_status,
    list_jobs,
    mark_failed,
    new_job_id,
    owner_id,
    planned_clips,
    utcnow,
    valid_job_id,
    write_job,
)
from core.settings import Settings
from core.storage import LocalStore


def _job(store: LocalStore, owner: str = "o", frames: int = 10, clip_length: int = 4) -> Job:
    now = utcnow()
    job = Job(
        id=new_job_id(),
        owner=owner,
        created_at=now,
        created_ms=int(now.timestamp() * 1000),
        source_bytes=1,
        options=JobOptions(clip_length=clip_length),
        input=InputInfo(
            width=8, height=4, fps=25, fps_num=25, fps_den=1, frames=frames, codec="ffv1"
        ),
        frames_planned=frames,
        clip_length=clip_length,
    )
    write_job(store, job)
    return job


def _commit_clip(store: LocalStore, job_id: str, k: int, psnr: float, nbytes: int) -> None:
    keys = Keys(job_id)
    store.put_bytes(keys.chunk(k), b"x" * nbytes)
    store.put_bytes(keys.metrics(k), json.dumps({"psnr": psnr, "bytes": nbytes}).encode())


def _split(store: LocalStore, job: Job) -> None:
    clips = planned_clips(job.frames_planned, job.clip_length)
    plan = Plan(width=8, height=4, frames=job.frames_planned, clips=clips)
    store.put_bytes(Keys(job.id).plan, plan.model_dump_json().encode())


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)


def test_ids_keys_and_owners() -> None:
    a, b = new_job_id(), new_job_id()
    assert a != b and valid_job_id(a)
    for bad in ["", "../etc", "A" * 32, a + "0", a[:-1] + "/"]:
        assert not valid_job_id(bad)
        with pytest.raises(ValueError):
            Keys(bad)
    assert owner_id(None) == "local"
    assert owner_id("k1") != owner_id("k2") and "k1" not in owner_id("k1")


def test_planned_clips_cover_every_frame() -> None:
    clips = planned_clips(10, 4)
    assert [(c.first_frame, c.frames) for c in clips] == [(0, 4), (4, 4), (8, 2)]
    assert len(planned_clips(3, 16)) == 1


def test_options_alias_and_strictness() -> None:
    opts = JobOptions.model_validate({"lambda": "0.01", "clip_length": "8"})
    assert opts.lam == 0.01 and opts.clip_length == 8
    assert opts.model_dump(exclude_none=True, by_alias=True) == {"lambda": 0.01, "clip_length": 8}
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"clip_length": 0})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"mode": "magic"})
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"bogus": 1})


def test_status_lifecycle(store: LocalStore) -> None:
    job = _job(store)
    st = job_status(store, job.id)
    assert st is not None and st.status == "queued" and st.clips_total == 3 and st.clips_done == 0
    assert [c.status for c in st.clips] == ["pending"] * 3

    _split(store, job)
    _commit_clip(store, job.id, 0, psnr=30.0, nbytes=100)
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
    assert st.clips[0].links["chunk"] == f"/v1/jobs/{job.id}/clips/0"

    _commit_clip(store, job.id, 1, psnr=40.0, nbytes=50)
    _commit_clip(store, job.id, 2, psnr=40.0, nbytes=50)
    st = job_status(store, job.id)
    assert st.status == "succeeded" and st.progress == 100 and st.bytes == 200
    # The mean of per-frame PSNR (the codec's definition): frame-weighted over clips.
    assert st.psnr == pytest.approx((4 * 30.0 + 4 * 40.0 + 2 * 40.0) / 10)


def test_chunk_without_metrics_is_not_done(store: LocalStore) -> None:
    """The chunk is the commit point but metrics land after it: until they do the clip
    (and the job) is still running, so success never comes with metrics missing."""
    job = _job(store)
    _split(store, job)
    for k in range(3):
        _commit_clip(store, job.id, k, psnr=30.0, nbytes=10)
    store.delete(Keys(job.id).metrics(2))
    st = job_status(store, job.id)
    assert st.status == "running" and st.clips_done == 2
    assert st.clips[2].status == "running" and st.clips[2].links["chunk"]


def test_expired_lease_is_not_running(store: LocalStore) -> None:
    job = _job(store)
    _split(store, job)
    store.put_bytes(Keys(job.id).lease(0), json.dumps({"expires": time.time() - 1}).encode())
    assert job_status(store, job.id).clips[0].status == "pending"


def test_failed_first_error_wins(store: LocalStore) -> None:
    job = _job(store)
    mark_failed(store, job.id, "encode_failed", "clip 1: boom")
    mark_failed(store, job.id, "other", "later")
    st = job_status(store, job.id)
    assert st.status == "failed" and st.error.code == "encode_failed"
    assert st.error.detail == "clip 1: boom"


def test_cancel_deletes_data_keeps_tombstone(store: LocalStore) -> None:
    job = _job(store)
    _split(store, job)
    store.put_bytes(Keys(job.id).source, b"video")
    _commit_clip(store, job.id, 0, 30.0, 10)
    cancel_job(store, job.id)
    assert sorted(store.list(Keys(job.id).prefix)) == sorted(
        [Keys(job.id).job, Keys(job.id).cancelled]
    )
    st = job_status(store, job.id)
    assert st.status == "cancelled" and st.clips_done == 0


def test_unknown_job_is_none(store: LocalStore) -> None:
    assert job_status(store, new_job_id()) is None
    assert job_status(store, "../../etc/passwd") is None


def test_list_jobs_pages_per_owner(store: LocalStore) -> None:
    mine = [_job(store, "me").id for _ in range(5)]
    _job(store, "someone-else")
    ids, cursor = list_jobs(store, "me", limit=2)
    got = list(ids)
    while cursor:
        ids, cursor = list_jobs(store, "me", limit=2, cursor=cursor)
        got += ids
    assert sorted(got) == sorted(mine) and len(got) == 5


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UARNVC_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("UARNVC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("UARNVC_MAX_UPLOAD_BYTES", "1234")
    s = Settings()
    assert s.api_keys == ["k1", "k2"] and s.max_upload_bytes == 1234
    assert s.effective_broker_url == "filesystem://"
    assert s.effective_store_url == (tmp_path / "store").resolve().as_uri()
    monkeypatch.setenv("UARNVC_STORE_URL", "s3://b/p")
    assert Settings().effective_store_url == "s3://b/p"
