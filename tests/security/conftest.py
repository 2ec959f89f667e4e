"""Real uvicorn servers (`uarnvc api`, no worker) for the outside-probe tests, started once
per configuration and shared by the modules that ask for the same one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.media import make_video
from tests.fixtures.servers import Processes, free_port, service_cmd, wait_http

ALICE, BOB = "alice", "bob"
# Quotas and the rate limit out of the way unless a test is about them: each test sets
# only what it probes.
BASE_ENV = {
    "UARNVC_RATE_LIMIT": "0",
    "UARNVC_POLL_INTERVAL": "0.5",
    "UARNVC_MAX_ACTIVE_JOBS": "0",
    "UARNVC_MAX_QUEUED_JOBS": "0",
}
TINY = {"steps": "5", "params": "6000", "clip_length": "4", "frames": "12", "width": "48"}


@dataclass
class Api:
    url: str
    port: int
    data: Path
    procs: Processes

    def client(self, key: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.procs.log("api")


class Servers:
    """One `uarnvc api` per distinct environment, for the whole session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.running: dict[tuple[tuple[str, str], ...], Api] = {}
        self.procs: list[Processes] = []

    def get(self, **env: str) -> Api:
        full = {**BASE_ENV, **{f"UARNVC_{k.upper()}": str(v) for k, v in env.items()}}
        key = tuple(sorted(full.items()))
        if key not in self.running:
            d = self.tmp.mktemp("api")
            procs = Processes(d)
            self.procs.append(procs)
            port = free_port()
            full["UARNVC_DATA_DIR"] = str(d / "data")
            proc = procs.start("api", service_cmd("api", "--port", str(port)), full)
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
            except BaseException:
                print(procs.dump())
                raise
            self.running[key] = Api(f"http://127.0.0.1:{port}", port, d / "data", procs)
        return self.running[key]

    def stop(self) -> None:
        for p in self.procs:
            p.stop_all()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    s = Servers(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def keyed(servers: Servers) -> Api:
    """Two tenants, alice and bob, as in the probe (`UARNVC_API_KEYS=alice,bob`)."""
    return servers.get(api_keys=f"{ALICE},{BOB}")


@pytest.fixture(scope="session")
def keyless(servers: Servers) -> Api:
    return servers.get()


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "small.mkv")


def submit(c: httpx.Client, video: Path, headers: dict | None = None, **fields: str):
    with open(video, "rb") as f:
        return c.post(
            "/v1/jobs",
            files={"file": (video.name, f, "video/x-matroska")},
            data={**TINY, **fields},
            headers=headers or {},
        )


def new_job(c: httpx.Client, video: Path, **fields: str) -> str:
    r = submit(c, video, **fields)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    if code:
        assert body["type"] == f"urn:uarnvc:problem:{code}", body
    return body


@contextlib.contextmanager
def other_tenant_polls(api: Api, key: str | None, job: str) -> Iterator[list[int]]:
    """Another tenant polls its own job in a thread for the duration; the statuses it got
    are in the yielded list (all must be 200)."""
    import threading

    codes: list[int] = []
    stop = threading.Event()

    c = api.client(key)

    def run() -> None:
        while not stop.is_set():
            codes.append(c.get(f"/v1/jobs/{job}").status_code)
            stop.wait(0.05)

    codes.append(c.get(f"/v1/jobs/{job}").status_code)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield codes
    finally:
        stop.set()
        t.join(30)
        codes.append(c.get(f"/v1/jobs/{job}").status_code)
        c.close()


def encode_inline(api: Api, job: str, clips: int | None = None) -> None:
    """Be the worker for `job`: split, then train its clips (all, or the first `clips`),
    in this process, on the server's own store (a local directory under its data dir)."""
    from core.settings import Settings
    from core.storage import LocalStore
    from worker import pipeline

    settings = Settings(data_dir=api.data, torch_threads=1)
    store = LocalStore(api.data / "store")
    queue: list[tuple[str, list]] = [("split", [job])]
    trained = 0
    while queue and (clips is None or trained < clips):
        kind, args = queue.pop(0)
        enq = lambda k, a: queue.append((k, a))  # noqa: E731
        if kind == "split":
            pipeline.split(store, settings, *args, enq)
        else:
            pipeline.encode(store, settings, *args, enq)
            trained += 1


@pytest.fixture(scope="session")
def done_job(keyed: Api, video: Path) -> str:
    """An encoded job of alice's on the keyed server (3 clips)."""
    with keyed.client(ALICE) as alice:
        job = new_job(alice, video)
    encode_inline(keyed, job)
    return job
