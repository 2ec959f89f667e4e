"""Fixtures for worker tests: a job with its source stored, ready to split."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.jobs import InputInfo, Job, JobOptions, Keys, new_job_id, utcnow, write_job
from core.settings import Settings
from core.storage import LocalStore
from tests.fixtures.media import TINY, small_video  # noqa: F401


@pytest.fixture
def env(tmp_path: Path, small_video: Path):  # noqa: F811
    settings = Settings(data_dir=tmp_path, lease_seconds=3)
    store = LocalStore(tmp_path / "store")
    now = utcnow()
    opts = JobOptions.model_validate(TINY)
    job = Job(
        id=new_job_id(),
        owner="local",
        created_at=now,
        created_ms=int(now.timestamp() * 1000),
        source_bytes=small_video.stat().st_size,
        options=opts,
        input=InputInfo(
            width=64, height=48, fps=25, fps_num=25, fps_den=1, frames=12, codec="ffv1"
        ),
        frames_planned=12,
        clip_length=4,
    )
    with open(small_video, "rb") as f:
        store.put_stream(Keys(job.id).source, f)
    write_job(store, job)
    return settings, store, job.id
