"""Webhooks: URL checks at job creation, per-key defaults, and delivery to a real receiver
on loopback that verifies Standard Webhooks signatures (the pipeline run in-process).

A worker killed mid-delivery, with real processes: tests/e2e/test_webhooks.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from core import webhooks
from tests.api.conftest import TINY, AppFactory, post_video
from worker import hooks, pipeline

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXdlYmhvb2tzLTEyMzQ1Ng=="  # base64 of a test key


class Receiver:
    """A webhook endpoint on 127.0.0.1: verifies each request, answers `status` (a list:
    one per request, the last repeated), keeps what it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = statuses or [204]
        self.got: list[tuple[dict[str, str], dict]] = []
        self.bad: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    data = Webhook(SECRET).verify(body, headers)
                    outer.got.append((headers, data))
                except Exception as e:
                    outer.bad.append(str(e))
                i = min(len(outer.got) + len(outer.bad) - 1, len(outer.statuses) - 1)
                self.send_response(outer.statuses[i])
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def hook_client(make_client: AppFactory, **kw: object) -> TestClient:
    return make_client(webhook_secret=SECRET, webhook_allow_private=True, **kw)


def run_with_hooks(client: TestClient, job_id: str, deliver: bool = True) -> list:
    """split + every clip in this process; each webhook delivered as it is queued (its
    id returned), or with `deliver=False` only collected (its task's args returned)."""
    settings, store = client.app.state.settings, client.app.state.store
    queue: list[tuple[str, list]] = [("split", [job_id])]
    hooked: list = []
    while queue:
        kind, args = queue.pop(0)
        enq = lambda k, a: queue.append((k, a))  # noqa: E731
        if kind == "split":
            pipeline.split(store, settings, *args, enq)
        elif kind == "encode":
            pipeline.encode(store, settings, *args, enq)
        elif deliver:
            assert hooks.deliver(store, settings, *args) == "delivered"
            hooked.append(args[1])
        else:
            hooked.append(args)
    return hooked


def test_url_checks_at_job_creation(make_client: AppFactory, small_video: Path) -> None:
    strict = make_client(webhook_secret=SECRET)
    for url in (
        "http://127.0.0.1:9/x",  # loopback
        "http://10.1.2.3/x",  # private
        "http://169.254.169.254/latest",  # link-local (cloud metadata)
        "http://[::1]/x",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
        "not a url",
    ):
        r = post_video(strict, small_video, webhook_url=url)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["type"].endswith("invalid-webhook-url"), url
    assert strict.app.state.store.list("jobs/") == []
    no_secret = make_client(webhook_allow_private=True)
    r = post_video(no_secret, small_video, webhook_url="http://127.0.0.1:9/x")
    assert r.status_code == 422 and r.json()["type"].endswith("webhooks-disabled")


def test_a_key_default_applies(make_client: AppFactory, small_video: Path) -> None:
    c = hook_client(
        make_client,
        api_keys=["alice", "bob"],
        webhook_urls={"alice": "http://127.0.0.1:9/alice"},
    )
    alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
    assert post_video(c, small_video, alice).json()["webhook_url"] == "http://127.0.0.1:9/alice"
    assert post_video(c, small_video, bob).json()["webhook_url"] is None
    own = post_video(c, small_video, alice, webhook_url="http://127.0.0.1:9/mine")
    assert own.json()["webhook_url"] == "http://127.0.0.1:9/mine"


def test_events_arrive_signed_once_each(
    make_client: AppFactory, small_video: Path, receiver: Receiver
) -> None:
    c = hook_client(make_client)
    r = post_video(c, small_video, webhook_url=receiver.url)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    delivered = run_with_hooks(c, job)
    assert receiver.bad == []
    types = [d["type"] for _h, d in receiver.got]
    assert types == ["clip.done", "clip.done", "clip.done", "job.succeeded"]
    ids = [h["webhook-id"] for h, _d in receiver.got]
    assert (
        ids
        == delivered
        == [
            webhooks.webhook_id(job, "clip.done", 0),
            webhooks.webhook_id(job, "clip.done", 1),
            webhooks.webhook_id(job, "clip.done", 2),
            webhooks.webhook_id(job, "job.succeeded"),
        ]
    )
    clip1 = receiver.got[1][1]["data"]
    assert clip1["job_id"] == job and clip1["clip"]["index"] == 1 and clip1["clip"]["psnr"] > 0
    final = receiver.got[3][1]["data"]
    assert final["status"] == "succeeded" and final["clips_done"] == 3
    store = c.app.state.store
    recs = [webhooks.read_record(store, job, i) for i in ids]
    assert all(r and r["state"] == "delivered" and r["attempts"] == 1 for r in recs)

    # A redelivered clip task re-emits; the record absorbs it: nothing is sent twice.
    queue: list = []
    pipeline.encode(store, c.app.state.settings, job, 2, lambda k, a: queue.append((k, a)))
    assert [k for k, _ in queue] == []


def test_retries_same_bytes_and_never_fails_the_job(
    make_client: AppFactory, small_video: Path
) -> None:
    flaky = Receiver([500, 503, 204])
    try:
        c = hook_client(make_client)
        job = post_video(c, small_video, webhook_url=flaky.url, **{**TINY, "frames": "4"}).json()
        store, settings = c.app.state.store, c.app.state.settings
        hook_tasks = run_with_hooks(c, job["id"], deliver=False)
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
        _job, wid = hook_tasks[0]
        for _ in range(2):
            with pytest.raises(hooks.DeliveryFailed):
                hooks.deliver(store, settings, job["id"], wid)
        assert hooks.deliver(store, settings, job["id"], wid) == "delivered"
        assert flaky.bad == [] and len(flaky.got) == 3
        bodies = {json.dumps(d, sort_keys=True) for _h, d in flaky.got}
        assert len(bodies) == 1  # every attempt said the same thing
        assert {h["webhook-id"] for h, _d in flaky.got} == {wid}
        assert webhooks.read_record(store, job["id"], wid)["attempts"] == 3
        assert hooks.deliver(store, settings, job["id"], wid) == "skipped"
    finally:
        flaky.close()


def test_failed_job_emits_job_failed(
    make_client: AppFactory, tmp_path: Path, receiver: Receiver
) -> None:
    c = hook_client(make_client)
    store, settings = c.app.state.store, c.app.state.settings
    from tests.fixtures.media import make_video

    video = make_video(tmp_path / "v.mkv")
    job = post_video(c, video, webhook_url=receiver.url).json()["id"]
    queue: list[tuple[str, list]] = []
    hooks.fail(store, job, "encode_failed", "clip 0: boom", lambda k, a: queue.append((k, a)))
    assert [k for k, _ in queue] == ["hook"]
    assert hooks.deliver(store, settings, *queue[0][1]) == "delivered"
    (headers, data) = receiver.got[0]
    assert data["type"] == "job.failed" and data["data"]["error"]["code"] == "encode_failed"
    assert headers["webhook-id"] == webhooks.webhook_id(job, "job.failed")
