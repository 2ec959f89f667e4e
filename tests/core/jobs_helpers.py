"""Job records for tests/core: a job in a store, its split and its clips committed."""

from __future__ import annotations

import json

from core.jobs import (
    InputInfo,
    Job,
    JobOptions,
    Keys,
    Plan,
    new_job_id,
    planned_clips,
    utcnow,
    write_job,
)
from core.storage import LocalStore


def make_job(store: LocalStore, owner: str = "o", frames: int = 10, clip_length: int = 4) -> Job:
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


def commit_clip(store: LocalStore, job_id: str, k: int, psnr: float, nbytes: int) -> None:
    keys = Keys(job_id)
    store.put_bytes(keys.chunk(k), b"x" * nbytes)
    store.put_bytes(keys.metrics(k), json.dumps({"psnr": psnr, "bytes": nbytes}).encode())


def split_job(store: LocalStore, job: Job) -> None:
    clips = planned_clips(job.frames_planned, job.clip_length)
    plan = Plan(width=8, height=4, frames=job.frames_planned, clips=clips)
    store.put_bytes(Keys(job.id).plan, plan.model_dump_json().encode())
