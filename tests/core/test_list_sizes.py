"""`list_sizes`: one listing with sizes, what /metrics uses for bytes stored."""

from __future__ import annotations

import io
from pathlib import Path

from core.storage import LocalStore, S3Store
from tests.fixtures.servers import moto_endpoint, s3_bucket  # noqa: F401


def _fill(store) -> None:
    store.put_bytes("jobs/a/job.json", b"{}")
    store.put_stream("jobs/a/source", io.BytesIO(b"x" * 1000))
    store.put_bytes("jobs/b/clips/0.uarc", b"abc")
    store.put_bytes("owners/o/1-a", b"")


def test_local_list_sizes(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    _fill(s)
    assert s.list_sizes("jobs/") == {
        "jobs/a/job.json": 2,
        "jobs/a/source": 1000,
        "jobs/b/clips/0.uarc": 3,
    }
    assert s.list_sizes("nothing/") == {}


def test_s3_list_sizes(moto_endpoint: str, s3_bucket: str) -> None:  # noqa: F811
    s = S3Store(s3_bucket, "pre", endpoint_url=moto_endpoint)
    _fill(s)
    assert s.list_sizes("jobs/a/") == {"jobs/a/job.json": 2, "jobs/a/source": 1000}
    assert sum(s.list_sizes("").values()) == 1005
