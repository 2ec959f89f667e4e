"""tus uploads at /v1/uploads and jobs made from them (`upload_id`), in-process.

The real client over real sockets (a cut connection resumed on another API process) is
tests/e2e/test_tus.py; these pin the protocol answers and the checks a job from an
upload shares with a multipart one.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from core import uploads as up
from core.jobs import Keys
from tests.api.conftest import TINY, AppFactory
from tests.fixtures.servers import moto_endpoint, s3_bucket  # noqa: F401

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


def create(c: TestClient, length: int, headers: dict | None = None) -> str:
    r = c.post(
        "/v1/uploads",
        headers={**TUS, "Upload-Length": str(length), **(headers or {})},
    )
    assert r.status_code == 201, r.text
    uid = r.headers["location"].rsplit("/", 1)[1]
    assert up.valid_upload_id(uid)
    return uid


def patch(c: TestClient, uid: str, offset: int, data: bytes, headers: dict | None = None):
    return c.patch(
        f"/v1/uploads/{uid}",
        headers={**PATCH, "Upload-Offset": str(offset), **(headers or {})},
        content=data,
    )


def upload(c: TestClient, data: bytes, pieces: int = 3, headers: dict | None = None) -> str:
    uid = create(c, len(data), headers)
    step = -(-len(data) // pieces)
    for off in range(0, len(data), step):
        r = patch(c, uid, off, data[off : off + step], headers)
        assert r.status_code == 204, r.text
        assert int(r.headers["upload-offset"]) == min(len(data), off + step)
    return uid


def is_problem(r, status: int, code: str | None = None) -> bool:
    ok = r.status_code == status and r.headers["content-type"] == "application/problem+json"
    return ok and (code is None or r.json()["type"].endswith(":" + code))


def test_options_advertise_what_works(client: TestClient) -> None:
    r = client.options("/v1/uploads/", headers=TUS)
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert set(r.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-defer-length",
        "expiration",
        "termination",
    }
    assert int(r.headers["tus-max-size"]) == client.app.state.settings.max_upload_bytes


def test_upload_then_job_keeps_the_bytes(client: TestClient, small_video: Path) -> None:
    data = small_video.read_bytes()
    uid = upload(client, data, headers={"Upload-Metadata": "filename c21hbGwubWt2"})
    head = client.head(f"/v1/uploads/{uid}", headers=TUS)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"

    r = client.post("/v1/jobs", json={"upload_id": uid, **TINY})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["filename"] == "small.mkv" and job["clips_total"] == 3
    store = client.app.state.store
    assert store.get_bytes(Keys(job["id"]).source) == data  # unchanged
    assert store.list(f"uploads/{uid}/") == []  # spent: the job has its copy
    again = client.post("/v1/jobs", json={"upload_id": uid, **TINY})
    assert is_problem(again, 404, "upload-not-found")


def test_urlencoded_form_with_upload_id(client: TestClient, small_video: Path) -> None:
    uid = upload(client, small_video.read_bytes(), pieces=1)
    r = client.post("/v1/jobs", data={"upload_id": uid, **TINY})
    assert r.status_code == 202, r.text


def test_protocol_errors_are_problems(make_client: AppFactory, small_video: Path) -> None:
    c = make_client(max_upload_bytes=40_000)
    data = small_video.read_bytes()  # ~29 kB
    uid = create(c, len(data))
    assert patch(c, uid, 0, data[:1000]).status_code == 204
    wrong = patch(c, uid, 0, data[:1000])
    assert is_problem(wrong, 409)
    assert c.head(f"/v1/uploads/{uid}", headers=TUS).headers["upload-offset"] == "1000"
    assert is_problem(patch(c, "0" * 32, 0, b"x"), 404, "upload-not-found")
    assert is_problem(c.head("/v1/uploads/not-an-id", headers=TUS), 404)
    too_big = c.post("/v1/uploads", headers={**TUS, "Upload-Length": "40001"})
    assert is_problem(too_big, 413, "upload-too-large")
    deferred = c.post("/v1/uploads", headers={**TUS, "Upload-Defer-Length": "1"})
    assert deferred.status_code == 201
    d_uid = deferred.headers["location"].rsplit("/", 1)[1]
    over = patch(c, d_uid, 0, b"\0" * 40_001)  # no declared length: the limit still holds
    assert is_problem(over, 413)
    assert is_problem(c.post("/v1/uploads", headers=TUS), 400, "no-upload-length")
    no_version = c.post("/v1/uploads", headers={"Upload-Length": "10"})
    assert is_problem(no_version, 400, "tus-resumable-missing")
    old_version = c.post("/v1/uploads", headers={"Upload-Length": "10", "Tus-Resumable": "0.2.2"})
    assert is_problem(old_version, 412) and old_version.headers["tus-version"] == "1.0.0"
    concat = c.post("/v1/uploads", headers={**TUS, "Upload-Concat": "partial"})
    assert is_problem(concat, 400, "no-concatenation")
    with_body = c.post(
        "/v1/uploads", headers={**TUS, "Upload-Length": "3"}, content=b"abc"
    )  # creation-with-upload is not offered: never read into memory
    assert is_problem(with_body, 400, "creation-with-upload")
    incomplete = c.post("/v1/jobs", json={"upload_id": uid})
    assert is_problem(incomplete, 409, "upload-incomplete")


def test_termination(client: TestClient) -> None:
    uid = create(client, 10)
    assert patch(client, uid, 0, b"01234").status_code == 204
    assert client.delete(f"/v1/uploads/{uid}", headers=TUS).status_code == 204
    assert is_problem(client.head(f"/v1/uploads/{uid}", headers=TUS), 404)
    assert client.app.state.store.list(f"uploads/{uid}/") == []


def test_not_a_video_is_refused_at_job_creation(client: TestClient) -> None:
    uid = upload(client, b"definitely not a video " * 100)
    r = client.post("/v1/jobs", json={"upload_id": uid, **TINY})
    assert is_problem(r, 422, "invalid-video")
    assert not any(k.startswith("jobs/") for k in client.app.state.store.list(""))
    both = client.post("/v1/jobs", files={"file": ("x.mkv", b"x")}, data={"upload_id": uid, **TINY})
    assert is_problem(both, 422, "file-and-upload")


def test_job_checks_and_quotas_apply(make_client: AppFactory, small_video: Path) -> None:
    c = make_client(max_active_jobs=1, max_job_compute=1e6)
    data = small_video.read_bytes()
    uid = upload(c, data)
    big = c.post("/v1/jobs", json={"upload_id": uid, **TINY, "steps": "1000"})
    assert is_problem(big, 422, "job-too-large")  # check_job_size
    assert c.post("/v1/jobs", json={"upload_id": uid, **TINY}).status_code == 202
    uid2 = upload(c, data)
    assert is_problem(c.post("/v1/jobs", json={"upload_id": uid2, **TINY}), 429, "too-many-jobs")


def test_uploads_are_their_keys_only(make_client: AppFactory, small_video: Path) -> None:
    c = make_client(api_keys=["alice", "bob"])
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    assert c.post("/v1/uploads", headers={**TUS, "Upload-Length": "5"}).status_code == 401
    uid = upload(c, small_video.read_bytes(), headers=alice)
    for r in (
        c.head(f"/v1/uploads/{uid}", headers={**TUS, **bob}),
        patch(c, uid, 0, b"x", bob),
        c.delete(f"/v1/uploads/{uid}", headers={**TUS, **bob}),
        c.post("/v1/jobs", json={"upload_id": uid, **TINY}, headers=bob),
    ):
        assert is_problem(r, 404), r.text
    assert c.post("/v1/jobs", json={"upload_id": uid, **TINY}, headers=alice).status_code == 202


def test_any_replica_resumes(make_client: AppFactory, small_video: Path) -> None:
    """Two apps on one store: bytes sent to one are the offset of the other."""
    a, b = make_client(), make_client()
    data = small_video.read_bytes()
    uid = create(a, len(data))
    assert patch(a, uid, 0, data[:12345]).status_code == 204
    assert b.head(f"/v1/uploads/{uid}", headers=TUS).headers["upload-offset"] == "12345"
    assert patch(b, uid, 12345, data[12345:]).status_code == 204
    r = a.post("/v1/jobs", json={"upload_id": uid, **TINY})
    assert r.status_code == 202
    assert a.app.state.store.get_bytes(Keys(r.json()["id"]).source) == data


def test_abandoned_uploads_expire(make_client: AppFactory) -> None:
    # 3 s leaves a slow CI machine room between the upload's creation and its first PATCH.
    c = make_client(upload_expire_seconds=3)
    uid = create(c, 10)
    r = patch(c, uid, 0, b"01234")
    assert r.status_code == 204 and "upload-expires" in r.headers
    time.sleep(4.1)
    assert is_problem(patch(c, uid, 5, b"56789"), 410)
    assert is_problem(c.post("/v1/jobs", json={"upload_id": uid}), 404, "upload-not-found")
    store = c.app.state.store
    assert up.sweep_expired(store, 1) == 1
    assert store.list(f"uploads/{uid}/") == []


def test_a_failed_patch_leaves_nothing_for_the_next(client: TestClient) -> None:
    """Bytes a PATCH buffered but never flushed (it failed) are not the next PATCH's."""
    import anyio

    storage = client.app.state.tus_storage
    uid = create(client, 10)

    async def run() -> None:
        async with storage.lock(uid):
            await storage.append(uid, b"stale")  # then the request dies: no flush
        async with storage.lock(uid):
            await storage.append(uid, b"01234")
            await storage.flush(uid)

    anyio.run(run)
    store = client.app.state.store
    assert up.stored_size(store, uid) == 5
    assert store.get_bytes(up.UploadKeys(uid).part(0)) == b"01234"


def test_resume_across_apps_on_s3(
    make_client: AppFactory,
    small_video: Path,
    moto_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    """The same on S3 (a real moto server): parts and record live in the bucket."""
    s3 = {"store_url": f"s3://{s3_bucket}/svc", "s3_endpoint_url": moto_endpoint}
    a, b = make_client(**s3), make_client(**s3)
    data = small_video.read_bytes()
    uid = create(a, len(data))
    assert patch(a, uid, 0, data[:10000]).status_code == 204
    assert is_problem(patch(b, uid, 0, data[:10000]), 409)  # B sees A's bytes
    assert b.head(f"/v1/uploads/{uid}", headers=TUS).headers["upload-offset"] == "10000"
    assert patch(b, uid, 10000, data[10000:]).status_code == 204
    r = b.post("/v1/jobs", json={"upload_id": uid, **TINY})
    assert r.status_code == 202, r.text
    assert a.app.state.store.get_bytes(Keys(r.json()["id"]).source) == data


def test_two_replicas_racing_on_one_offset(make_client: AppFactory) -> None:
    """Both validated offset 0; the one that stores first wins, the other gets 409 and
    writes nothing (the parts are created exclusively)."""
    import anyio
    from fastapi import HTTPException

    a, b = make_client(), make_client()
    uid = create(a, 10)
    sa, sb = a.app.state.tus_storage, b.app.state.tus_storage

    async def run() -> None:
        async with sb.lock(uid), sa.lock(uid):
            await sb.append(uid, b"BBBBB")  # B is receiving ...
            await sa.append(uid, b"AAAAA")
            await sa.flush(uid)  # ... A stores first
            try:
                await sb.flush(uid)
            except HTTPException as e:
                assert e.status_code == 409
            else:
                raise AssertionError("B overwrote A's bytes")

    anyio.run(run)
    store = a.app.state.store
    assert store.get_bytes(up.UploadKeys(uid).part(0)) == b"AAAAA"
    assert b.head(f"/v1/uploads/{uid}", headers=TUS).headers["upload-offset"] == "5"
