"""FastAPI dependencies shared by the routes: the app's settings and store, and the job a
request names, checked to belong to the caller."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request

from api.auth import current_owner
from api.problems import Problem
from core.jobs import Job, load_job
from core.logs import bind
from core.settings import Settings
from core.storage import ObjectStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


Owner = Annotated[str, Depends(current_owner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


async def owned_job(job_id: str, owner: Owner, store: StoreDep) -> Job:
    """The job if it exists and belongs to the caller; 404 otherwise (never 403: the
    existence of another caller's job is not disclosed)."""
    bind(job_id=job_id)  # this request's log lines (JSON logs) name the job
    job = await anyio.to_thread.run_sync(load_job, store, job_id)
    if job is None or job.owner != owner:
        raise Problem(404, f"no job {job_id}", code="job-not-found")
    return job


OwnedJob = Annotated[Job, Depends(owned_job)]
