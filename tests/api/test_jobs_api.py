"""Creating, listing, idempotency, cancel, and the ops endpoints."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from core.jobs import Keys
from tests.api.conftest import AppFactory, post_video, queued_messages, tmp_files


def test_create_returns_202_location_and_queues_split(
    client: TestClient, small_video: Path
) -> None:
    r = post_video(client, small_video)
    assert r.status_code == 202, r.text
    body = r.json()
    job = body["id"]
    assert r.headers["location"] == f"/v1/jobs/{job}" == body["links"]["self"]
    assert body["status"] == "queued"
    assert body["input"] == {
        "width": 64,
        "height": 48,
        "fps": 25.0,
        "fps_num": 25,
        "fps_den": 1,
        "frames": 12,
        "codec": "ffv1",
        "frames_exact": True,
    }
    assert body["clips_total"] == 3 and body["clips_done"] == 0
    assert [(c["first_frame"], c["frames"]) for c in body["clips"]] == [(0, 4), (4, 4), (8, 4)]
    store = client.app.state.store
    assert store.get_bytes(Keys(job).source) == small_video.read_bytes()
    assert [m.endswith(".cpu.msg") for m in queued_messages(client)] == [True]
    assert tmp_files(client) == []
    assert client.get(f"/v1/jobs/{job}").json()["status"] == "queued"


def test_rate_options_are_kept(client: TestClient, small_video: Path) -> None:
    """The quality knob and the per-clip targets reach the job (and so the workers)."""
    r = post_video(client, small_video, quality="7.5", target_psnr="31")
    assert r.status_code == 202, r.text
    opts = r.json()["options"]
    assert opts["quality"] == 7.5 and opts["target_psnr"] == 31 and opts["target_bpp"] is None


def test_raw_body_upload(client: TestClient, small_video: Path) -> None:
    r = client.post(
        "/v1/jobs?clip_length=6&steps=5&params=6000",
        content=small_video.read_bytes(),
        headers={"content-type": "application/octet-stream", "x-filename": "raw.mkv"},
    )
    assert r.status_code == 202, r.text
    assert r.json()["clips_total"] == 2 and r.json()["filename"] == "raw.mkv"


def test_idempotency_key(client: TestClient, small_video: Path) -> None:
    h = {"Idempotency-Key": "abc-123"}
    first = post_video(client, small_video, h)
    again = post_video(client, small_video, h)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(client.get("/v1/jobs").json()["jobs"]) == 1
    other = post_video(client, small_video, h, clip_length="6")
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    fresh = post_video(client, small_video, {"Idempotency-Key": "another"})
    assert fresh.json()["id"] != first.json()["id"]


def test_idempotency_keys_are_per_api_key(make_client: AppFactory, small_video: Path) -> None:
    client = make_client(api_keys=["a", "b"])
    ra = post_video(client, small_video, {"Authorization": "Bearer a", "Idempotency-Key": "k"})
    rb = post_video(client, small_video, {"Authorization": "Bearer b", "Idempotency-Key": "k"})
    assert ra.status_code == rb.status_code == 202
    assert ra.json()["id"] != rb.json()["id"]


def test_list_paginates(client: TestClient, small_video: Path) -> None:
    ids = [post_video(client, small_video).json()["id"] for _ in range(3)]
    page = client.get("/v1/jobs?limit=2").json()
    assert [j["id"] for j in page["jobs"]] == ids[:2] and page["next_cursor"]
    page2 = client.get(page["links"]["next"]).json()
    assert [j["id"] for j in page2["jobs"]] == ids[2:] and page2["next_cursor"] is None
    assert "clips" not in page["jobs"][0] and page["jobs"][0]["status"] == "queued"


def test_delete_cancels_and_deletes(client: TestClient, small_video: Path) -> None:
    job = post_video(client, small_video).json()["id"]
    assert client.delete(f"/v1/jobs/{job}").status_code == 204
    keys = Keys(job)
    left = client.app.state.store.list(keys.prefix)
    assert sorted(left) == sorted([keys.job, keys.cancelled])
    assert client.get(f"/v1/jobs/{job}").json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job}").status_code == 204  # idempotent


def test_health_ready_metrics(client: TestClient, small_video: Path) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"store": "ok", "broker": "ok"}
    post_video(client, small_video)
    client.post("/v1/jobs", files={"file": ("e", b"")})
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert "uarnvc_jobs_created_total 1.0" in m.text
    assert 'uarnvc_uploads_rejected_total{reason="empty-file"} 1.0' in m.text
    assert 'route="/v1/jobs/{job_id}"' in m.text or 'route="/v1/jobs"' in m.text
    assert client.get("/docs").status_code == 200
    assert "/v1/jobs/{job_id}/decode" in client.get("/openapi.json").json()["paths"]


def test_readyz_503_when_broker_down(make_client: AppFactory) -> None:
    client = make_client(broker_url="redis://127.0.0.1:1/0")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["checks"]["store"] == "ok"
    assert r.json()["checks"]["broker"].startswith("unavailable")
