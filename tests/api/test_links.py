"""The API's URL scheme (api/links.py): a status gets the job's links and a link for
each committed clip's chunk, including one whose metrics are not written yet."""

from __future__ import annotations

from pathlib import Path

from api.links import job_links, linked_status, webhook_links
from core.jobs import Keys
from core.storage import LocalStore
from tests.core.jobs_helpers import commit_clip, make_job, split_job


def test_status_links(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    job = make_job(store)
    split_job(store, job)
    commit_clip(store, job.id, 0, psnr=30.0, nbytes=10)
    commit_clip(store, job.id, 1, psnr=30.0, nbytes=10)
    store.delete(Keys(job.id).metrics(1))  # committed, metrics still to come
    st = linked_status(store, job.id)
    assert st is not None and st.links == job_links(job.id)
    assert st.links["self"] == f"/v1/jobs/{job.id}"
    assert [c.links.get("chunk") for c in st.clips] == [
        f"/v1/jobs/{job.id}/clips/0",
        f"/v1/jobs/{job.id}/clips/1",
        None,
    ]
    assert linked_status(store, "0" * 32) is None


def test_webhook_links() -> None:
    j = "a" * 32
    assert webhook_links(j, "clip.done", 3) == {
        "self": f"/v1/jobs/{j}",
        "chunk": f"/v1/jobs/{j}/clips/3",
    }
    assert webhook_links(j, "job.succeeded", None)["bitstream"] == f"/v1/jobs/{j}/bitstream"
    assert webhook_links(j, "job.failed", None) == {"self": f"/v1/jobs/{j}"}
