"""Bad requests get the right 4xx as problem+json, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import AppFactory, post_video, queued_messages, store_keys, tmp_files

PROBLEM = "application/problem+json"


def assert_problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"]
    if code:
        assert body["type"] == f"urn:uarnvc:problem:{code}"
    return body


def assert_nothing_left(client: TestClient) -> None:
    assert store_keys(client) == []
    assert tmp_files(client) == []
    assert queued_messages(client) == []


def test_no_file(client: TestClient) -> None:
    r = client.post("/v1/jobs", data={"mode": "uar"}, files={"other": ("x", b"1")})
    assert_problem(r, 422, "no-file")
    assert_nothing_left(client)


def test_not_multipart(client: TestClient) -> None:
    r = client.post("/v1/jobs", content=b"file=x", headers={"content-type": "text/plain"})
    assert_problem(r, 415)
    assert_nothing_left(client)
    # JSON carries fields (an `upload_id`), never the video itself.
    r = client.post("/v1/jobs", json={"file": "x"})
    assert_problem(r, 422, "no-file")
    assert_nothing_left(client)
    r = client.post("/v1/jobs", json={"steps": 5})
    assert_problem(r, 422, "no-file")
    assert_nothing_left(client)


def test_text_file(client: TestClient) -> None:
    r = client.post("/v1/jobs", files={"file": ("notes.txt", b"hello, not a video\n" * 50)})
    body = assert_problem(r, 422, "invalid-video")
    assert "notes.txt" in body["detail"] and "/tmp" not in body["detail"]
    assert_nothing_left(client)


def test_empty_file(client: TestClient) -> None:
    r = client.post("/v1/jobs", files={"file": ("empty.mp4", b"")})
    assert_problem(r, 422, "empty-file")
    assert_nothing_left(client)


def test_over_limit_multipart(make_client: AppFactory, small_video: Path) -> None:
    client = make_client(max_upload_bytes=1000)
    r = post_video(client, small_video)
    body = assert_problem(r, 413, "upload-too-large")
    assert body["limit"] == 1000
    assert_nothing_left(client)


def test_over_limit_enforced_while_streaming(make_client: AppFactory) -> None:
    """No Content-Length to trust: the limit is hit mid-stream."""
    client = make_client(max_upload_bytes=100_000)

    def body():
        for _ in range(50):
            yield b"\0" * 10_000

    r = client.post("/v1/jobs", content=body(), headers={"content-type": "video/mp4"})
    assert_problem(r, 413, "upload-too-large")
    assert_nothing_left(client)


def test_too_many_pixels(make_client: AppFactory, small_video: Path) -> None:
    client = make_client(max_pixels=100)
    r = post_video(client, small_video)
    assert "exceeds the limit" in assert_problem(r, 422, "invalid-video")["detail"]
    assert_nothing_left(client)


def test_too_many_frames(make_client: AppFactory, small_video: Path) -> None:
    client = make_client(max_frames=5)
    r = post_video(client, small_video)
    assert_problem(r, 422, "too-many-frames")
    assert_nothing_left(client)


@pytest.mark.parametrize(
    "fields",
    [
        {"clip_length": "0"},
        {"mode": "magic"},
        {"lambda": "-1"},
        {"width": "abc"},
        {"bogus": "1"},
        {"params": "10"},  # the codec's own bound (pydantic EncodeOptions)
        {"quality": "11"},
        {"target_bpp": "0.1", "target_psnr": "30"},  # one target at a time
    ],
)
def test_bad_options(client: TestClient, small_video: Path, fields: dict) -> None:
    r = post_video(client, small_video, **fields)
    body = assert_problem(r, 422, "invalid-options")
    assert body.get("errors") or body.get("allowed")
    assert_nothing_left(client)


def test_unknown_and_malformed_job_ids(client: TestClient) -> None:
    for path in ["/v1/jobs/" + "0" * 32, "/v1/jobs/..%2F..%2Fetc", "/v1/jobs/nothex"]:
        assert_problem(client.get(path), 404)
    assert_problem(client.delete("/v1/jobs/" + "f" * 32), 404)
    assert_problem(client.get("/v1/jobs/" + "0" * 32 + "/bitstream"), 404)
    assert_problem(client.get("/v1/nowhere"), 404)


def test_bad_query(client: TestClient) -> None:
    assert_problem(client.get("/v1/jobs?limit=0"), 422, "validation")
    assert_problem(client.get("/v1/jobs?cursor=../x"), 422, "validation")


def test_keys_required_and_jobs_private(make_client: AppFactory, small_video: Path) -> None:
    client = make_client(api_keys=["key-a", "key-b"])
    a = {"Authorization": "Bearer key-a"}
    b = {"Authorization": "Bearer key-b"}
    r = post_video(client, small_video)
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(post_video(client, small_video, {"Authorization": "Bearer nope"}), 401)
    assert_problem(client.get("/v1/jobs", headers={"Authorization": "Basic a2V5LWE6"}), 401)
    assert_nothing_left(client)

    r = post_video(client, small_video, a)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert client.get(f"/v1/jobs/{job}", headers=a).status_code == 200
    # Another key sees nothing: 404, not 403.
    for path in ["", "/bitstream", "/clips/0", "/events", "/decode"]:
        assert_problem(client.get(f"/v1/jobs/{job}{path}", headers=b), 404)
    assert_problem(client.delete(f"/v1/jobs/{job}", headers=b), 404)
    assert client.get("/v1/jobs", headers=b).json()["jobs"] == []
    assert [j["id"] for j in client.get("/v1/jobs", headers=a).json()["jobs"]] == [job]
    # Keys never reach the store.
    for key in store_keys(client):
        assert "key-a" not in key
        assert b"key-a" not in client.app.state.store.get_bytes(key)
