"""Signed webhooks with real processes: an API, a worker SIGKILLed while it delivers an
event (the receiver holds that request open), and a new worker (`--resume`). The receiver
on loopback verifies every signature with standardwebhooks and de-duplicates on
`webhook-id`: every event arrives, exactly once after de-duplication, and the job
succeeds whatever happened to its webhooks."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from core import webhooks
from core.storage import LocalStore
from tests.fixtures.media import TINY, make_video
from tests.fixtures.servers import Processes, free_port, poll, uarnvc_cmd, wait_http

pytestmark = pytest.mark.e2e
SECRET = "whsec_" + "ZTJlLXdlYmhvb2stc2VjcmV0LWZvci10aGUtdGVzdHM="


class HoldingReceiver:
    """Verifies each POST; the first delivery of `hold_id` is recorded, then held open
    until `release` (its worker is killed meanwhile); every other one answers 204."""

    def __init__(self, hold_id: str) -> None:
        self.hold_id = hold_id
        self.raw: list[str] = []  # webhook-id of every verified request, duplicates too
        self.events: dict[str, dict] = {}  # de-duplicated on webhook-id
        self.bad: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    data = Webhook(SECRET).verify(body, headers)
                except Exception as e:
                    outer.bad.append(str(e))
                    self.send_response(400)
                    self.end_headers()
                    return
                wid = headers["webhook-id"]
                outer.raw.append(wid)
                outer.events.setdefault(wid, data)
                if wid == outer.hold_id and not outer.holding.is_set():
                    outer.holding.set()
                    outer.release.wait(60)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rig(tmp_path: Path, processes: Processes) -> Iterator[tuple[str, dict[str, str], Path]]:
    data = tmp_path / "data"
    env = {
        "UARNVC_DATA_DIR": str(data),
        "UARNVC_WEBHOOK_SECRET": SECRET,
        "UARNVC_WEBHOOK_ALLOW_PRIVATE": "1",  # the receiver is on loopback
        "UARNVC_WEBHOOK_TIMEOUT": "60",
        "UARNVC_TORCH_THREADS": "1",
        "UARNVC_POLL_INTERVAL": "0.2",
    }
    port = free_port()
    api = processes.start("api", uarnvc_cmd("api", "--port", str(port)), env)
    wait_http(f"http://127.0.0.1:{port}/healthz", 90, api)
    yield f"http://127.0.0.1:{port}", env, data


@pytest.mark.timeout(300)
def test_worker_killed_mid_delivery(
    rig: tuple[str, dict[str, str], Path], processes: Processes, tmp_path: Path
) -> None:
    base, env, data = rig
    video = make_video(tmp_path / "v.mkv")
    worker = processes.start("worker1", uarnvc_cmd("worker", "-n", "w1@%h"), env)
    # The receiver needs the job id to know which delivery to hold: create, then point.
    receiver = HoldingReceiver(hold_id="")
    try:
        with open(video, "rb") as f:
            r = httpx.post(
                f"{base}/v1/jobs",
                files={"file": ("v.mkv", f)},
                data={**TINY, "webhook_url": receiver.url},
                timeout=60,
            )
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        receiver.hold_id = webhooks.webhook_id(job, "clip.done", 1)

        assert receiver.holding.wait(180), processes.dump()
        processes.stop(worker, signal.SIGKILL)  # mid-delivery: the POST is in flight
        receiver.release.set()
        processes.start("worker2", uarnvc_cmd("worker", "-n", "w2@%h", "--resume"), env)

        expected = {webhooks.webhook_id(job, "clip.done", k) for k in range(3)}
        expected.add(webhooks.webhook_id(job, "job.succeeded"))
        poll(lambda: set(receiver.events) >= expected, 180, 0.5, "every event delivered")
        time.sleep(1.0)  # anything late would show up as an extra id
        assert receiver.bad == []
        assert set(receiver.events) == expected  # exactly once each after de-duplication
        counts = Counter(receiver.raw)
        assert counts[receiver.hold_id] >= 2  # the killed delivery was sent again
        assert receiver.events[receiver.hold_id]["data"]["clip"]["index"] == 1
        st = httpx.get(f"{base}/v1/jobs/{job}").json()
        assert st["status"] == "succeeded" and st["clips_done"] == 3
        store = LocalStore(data / "store")
        recs = [webhooks.read_record(store, job, wid) for wid in expected]
        assert all(rec and rec["state"] == "delivered" for rec in recs), recs
    finally:
        receiver.close()
