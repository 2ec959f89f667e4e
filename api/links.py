"""The API's URL scheme: every link a response or a webhook carries is built here, so the
routes (api/routes_jobs.py) and the links that point at them change together.

The links are relative (`/v1/...`): the same answer is right behind any proxy or host.
The worker reads this module for webhook bodies (worker/hooks.py): a webhook links to
the API's resources too.
"""

from __future__ import annotations

from core.jobs import JobStatus
from core.status import job_status
from core.storage import ObjectStore

BASE = "/v1"


def job_url(job_id: str) -> str:
    return f"{BASE}/jobs/{job_id}"


def chunk_url(job_id: str, k: int) -> str:
    return f"{job_url(job_id)}/clips/{k}"


def bitstream_url(job_id: str) -> str:
    return f"{job_url(job_id)}/bitstream"


def jobs_page_url(limit: int, cursor: str) -> str:
    return f"{BASE}/jobs?limit={limit}&cursor={cursor}"


def job_links(job_id: str) -> dict[str, str]:
    j = job_url(job_id)
    return {
        "self": j,
        "bitstream": bitstream_url(job_id),
        "decode": j + "/decode?format=mkv",
        "events": j + "/events",
    }


def webhook_links(job_id: str, event: str, clip: int | None) -> dict[str, str]:
    """A webhook's links: the job, and the chunk of a `clip.done` or the bitstream of a
    `job.succeeded`."""
    links = {"self": job_url(job_id)}
    if event == "clip.done" and clip is not None:
        links["chunk"] = chunk_url(job_id, clip)
    elif event == "job.succeeded":
        links["bitstream"] = bitstream_url(job_id)
    return links


def linked(st: JobStatus) -> JobStatus:
    """The status with its links: the job's, and each committed clip's chunk."""
    st.links = job_links(st.id)
    for c in st.clips:
        if c.committed:
            c.links = {"chunk": chunk_url(st.id, c.index)}
    return st


def linked_status(store: ObjectStore, job_id: str) -> JobStatus | None:
    """The job's status as the API answers it (core/status.py, with links)."""
    st = job_status(store, job_id)
    return None if st is None else linked(st)
