"""Auth, tenancy and the API's defences (docs/reliability.md, "Auth, tenancy and
limits"): who gets in, who sees what, and what no request can make the API do (path
traversal, leaked keys, open CORS, floods)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import auth
from api.upload import safe_filename
from core.jobs import new_job_id, valid_job_id
from tests.api.conftest import AppFactory, post_video, store_keys
from tests.api.test_errors import assert_problem

KEY_A = "key-A-6b1f0c2e9d7a4f1b8c3e5a7d9f0b2c4e"
KEY_B = "key-B-0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


@pytest.fixture
def keyed(make_client: AppFactory) -> TestClient:
    return make_client(api_keys=[KEY_A, KEY_B])


@pytest.fixture
def job_of_a(keyed: TestClient, small_video: Path) -> str:
    r = post_video(keyed, small_video, headers=A)
    assert r.status_code == 202, r.text
    return r.json()["id"]


# ----------------------------------------------------------------------------- 401


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {KEY_A}x"},
        {"Authorization": f"Bearer {KEY_A[:-1]}"},
    ],
)
def test_missing_or_invalid_key_is_401(keyed: TestClient, headers: dict) -> None:
    for method, path in [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{new_job_id()}")]:
        r = keyed.request(method, path, headers=headers)
        assert_problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = keyed.post("/v1/jobs", files={"file": ("x.mkv", b"x")}, headers=headers)
    assert_problem(r, 401, "unauthorized")
    assert store_keys(keyed) == []


def test_keys_compared_in_constant_time() -> None:
    """Every configured key is compared with hmac.compare_digest, with no early exit
    (the loop ORs the results), so timing says nothing about which key or prefix."""
    src = inspect.getsource(auth.current_owner)
    assert "hmac.compare_digest" in src
    assert "ok |= hmac.compare_digest" in src and "break" not in src and "return" in src


# --------------------------------------------------------------------- tenancy: 404


def test_another_tenants_job_is_404_everywhere(keyed: TestClient, job_of_a: str) -> None:
    """B gets exactly what it gets for a job that does not exist: no existence leak."""
    ghost = new_job_id()
    paths = ["", "/clips/0", "/decode?format=mkv", "/events", "/bitstream"]
    for suffix in paths:
        mine = keyed.get(f"/v1/jobs/{job_of_a}{suffix}", headers=B)
        none = keyed.get(f"/v1/jobs/{ghost}{suffix}", headers=B)
        body = assert_problem(mine, 404, "job-not-found")
        assert body["detail"].replace(job_of_a, "ID") == none.json()["detail"].replace(ghost, "ID")
    assert_problem(keyed.delete(f"/v1/jobs/{job_of_a}", headers=B), 404, "job-not-found")
    assert keyed.get(f"/v1/jobs/{job_of_a}", headers=A).status_code == 200  # still there
    assert keyed.get("/v1/jobs", headers=B).json()["jobs"] == []
    assert [j["id"] for j in keyed.get("/v1/jobs", headers=A).json()["jobs"]] == [job_of_a]


def test_keys_never_logged_nor_stored(
    keyed: TestClient, small_video: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = post_video(keyed, small_video, headers=A)
    job = r.json()["id"]
    for h in (A, B, {"Authorization": "Bearer not-a-key-5f5f5f"}):
        keyed.get(f"/v1/jobs/{job}", headers=h)
        keyed.get("/v1/jobs", headers=h)
    keyed.delete(f"/v1/jobs/{job}", headers=A)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (KEY_A, KEY_B, "not-a-key-5f5f5f"):
        assert secret not in text
    store = keyed.app.state.store
    for key in store_keys(keyed):
        assert KEY_A not in key and KEY_A.encode() not in store.get_bytes(key)


# ---------------------------------------------------------------- ids and traversal


def test_job_ids_have_128_random_bits() -> None:
    ids = {new_job_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(valid_job_id(i) and len(i) == 32 for i in ids)  # 32 hex digits = 128 bits
    assert "secrets.token_hex(16)" in inspect.getsource(new_job_id)
    # No structure to guess: every hex digit is used at every position.
    assert all(len({i[p] for i in ids}) == 16 for p in range(32))


TRAVERSALS = [
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%2f..%2fjob.json",
    "%2E%2E",
    "..",
    "%2Fetc%2Fpasswd",
    "abc%00def",
    "0" * 31 + "%00",
    "0" * 32 + "%2F..%2F" + "0" * 32,
    "0" * 33,
    "G" * 32,
    "%C0%AE%C0%AE%2F",
    "x" * 5000,
]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_no_traversal_through_job_id(keyed: TestClient, job_of_a: str, bad: str) -> None:
    for suffix in ("", "/clips/0", "/events", "/bitstream", "/decode"):
        r = keyed.get(f"/v1/jobs/{bad}{suffix}", headers=A)
        assert r.status_code == 404, (bad, suffix, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("application/problem+json")
    assert keyed.delete(f"/v1/jobs/{bad}", headers=A).status_code == 404
    assert keyed.get(f"/v1/jobs/{job_of_a}", headers=A).status_code == 200


@pytest.mark.parametrize("k", ["-1", "..%2F..%2Fjob", "1e3", "99999999999999999999", "%00"])
def test_no_traversal_through_clip_index(keyed: TestClient, job_of_a: str, k: str) -> None:
    r = keyed.get(f"/v1/jobs/{job_of_a}/clips/{k}", headers=A)
    assert r.status_code in (404, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/clip.mkv", "clip.mkv"),
        ("..\\..\\win.mkv", "win.mkv"),
        ("nul\x00byte.mkv", "nulbyte.mkv"),
        ("line\r\nX-Injected: 1.mkv", "lineX-Injected: 1.mkv"),
        ("..", None),
        ("", None),
    ],
)
def test_filenames_are_metadata_not_paths(given: str, kept: str | None) -> None:
    assert safe_filename(given) == kept


def test_traversal_filename_upload_stays_inside(
    keyed: TestClient, small_video: Path, tmp_path: Path
) -> None:
    data = small_video.read_bytes()
    r = keyed.post(
        "/v1/jobs?steps=5&params=6000&clip_length=4&frames=12&width=48",
        content=data,
        headers={**A, "content-type": "video/x-matroska", "x-filename": "../../../escape.mkv"},
    )
    assert r.status_code == 202, r.text
    job = keyed.get(f"/v1/jobs/{r.json()['id']}", headers=A).json()
    assert job.get("filename") in (None, "escape.mkv")
    assert not list(tmp_path.rglob("escape.mkv"))
    assert all(k.startswith(("jobs/", "owners/", "active/")) for k in store_keys(keyed))


# ------------------------------------------------------------------------------ CORS


def test_cors_closed_by_default(keyed: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    r = keyed.get("/v1/jobs", headers={**A, **origin})
    assert "access-control-allow-origin" not in r.headers
    pre = keyed.options(
        "/v1/jobs",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in pre.headers
    assert keyed.get("/healthz", headers=origin).headers.get("access-control-allow-origin") is None


def test_cors_opened_by_setting(make_client: AppFactory) -> None:
    c = make_client(api_keys=[KEY_A], cors_origins=["https://app.example"])
    ok = c.get("/v1/jobs", headers={**A, "Origin": "https://app.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    other = c.get("/v1/jobs", headers={**A, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    pre = c.options(
        "/v1/jobs",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200 and "POST" in pre.headers["access-control-allow-methods"]


# ------------------------------------------------------------------- request limits


def test_rate_limit_per_key(make_client: AppFactory) -> None:
    c = make_client(api_keys=[KEY_A, KEY_B], rate_limit=1, rate_burst=5)
    codes = [c.get("/v1/jobs", headers=A).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3, codes
    r = c.get("/v1/jobs", headers=A)
    body = assert_problem(r, 429, "rate-limited")
    assert int(r.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
    assert c.get("/v1/jobs", headers=B).status_code == 200  # other keys have their own
    assert c.get("/healthz").status_code == 200  # probes are never limited
    assert c.get("/readyz").status_code == 200


def test_oversized_fields_and_headers(keyed: TestClient) -> None:
    r = keyed.post(
        "/v1/jobs",
        files={"file": ("a.mkv", b"\0" * 10)},
        data={"mode": "x" * 5000},
        headers=A,
    )
    assert_problem(r, 400, "bad-multipart")
    r = keyed.post(
        "/v1/jobs",
        files={"file": ("a.mkv", b"\0" * 10)},
        headers={**A, "Idempotency-Key": "k" * 300},
    )
    assert r.status_code in (400, 422) and r.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert store_keys(keyed) == []
