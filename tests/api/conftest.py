"""An isolated app per test: its own data dir, local store and filesystem broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings
from tests.fixtures.media import TINY, small_video  # noqa: F401
from worker import pipeline

AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        s = Settings(data_dir=tmp_path / "data", poll_interval=0.05, **overrides)
        c = TestClient(create_app(s), base_url="http://127.0.0.1")  # a loopback Host
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()


def store_keys(client: TestClient) -> list[str]:
    return client.app.state.store.list("")


def tmp_files(client: TestClient) -> list[str]:
    d = client.app.state.settings.tmp_dir
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def queued_messages(client: TestClient) -> list[str]:
    q = client.app.state.settings.broker_dir / "queue"
    return sorted(p.name for p in q.iterdir()) if q.exists() else []


def post_video(client: TestClient, path: Path, headers: dict | None = None, **fields: str):
    with open(path, "rb") as f:
        return client.post(
            "/v1/jobs",
            files={"file": (path.name, f, "video/x-matroska")},
            data={**TINY, **fields},
            headers=headers or {},
        )


def run_inline(client: TestClient, job_id: str, steps: int | None = None) -> int:
    """Do what the workers would (split, then the clip chain) in this process."""
    settings, store = client.app.state.settings, client.app.state.store
    queue: list[tuple[str, list]] = [("split", [job_id])]
    done = 0
    while queue and (steps is None or done < steps):
        kind, args = queue.pop(0)
        enq = lambda k, a: queue.append((k, a))  # noqa: E731
        if kind == "split":
            pipeline.split(store, settings, *args, enq)
        elif kind == "encode":
            pipeline.encode(store, settings, *args, enq)
        else:  # "hook": webhook deliveries are not the workers' part tested here
            continue
        done += 1
    return done
