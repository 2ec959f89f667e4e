"""The status cache (api/status_cache.py): polls answered from pre-encoded bytes without
the store, one load per job however many polls, stale-while-revalidate."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
from fastapi.testclient import TestClient

from api.app import create_app
from api.status_cache import StatusCache
from core.jobs import JobStatus
from core.settings import Settings
from tests.api.conftest import post_video


def _status(n: int) -> Any:
    return SimpleNamespace(model_dump=lambda **_: {"n": n})


def test_fresh_stale_and_missing() -> None:
    calls: list[int] = []
    job: Any = SimpleNamespace(owner="alice")
    gate = threading.Event()

    def load() -> tuple[Any, Any]:
        gate.wait(5)
        calls.append(1)
        return job, _status(len(calls))

    async def scenario() -> None:
        cache = StatusCache(ttl=0.2)
        gate.set()
        first = await cache.get("j", load)
        assert first is not None and first.owner == "alice"
        assert orjson.loads(first.body) == {"n": 1}
        assert (await cache.get("j", load)) is first and calls == [1]  # fresh: no load
        await asyncio.sleep(0.25)
        gate.clear()
        # Stale: answered at once from the old entry, while one refresh runs for all.
        stale = await asyncio.gather(*(cache.get("j", load) for _ in range(20)))
        assert all(e is first for e in stale) and calls == [1]
        gate.set()
        for _ in range(100):
            if calls == [1, 1]:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        assert orjson.loads(cache.peek("j").body) == {"n": 2} and calls == [1, 1]
        cache.drop("j")
        assert cache.peek("j") is None
        assert await cache.get("gone", lambda: (None, None)) is None

    asyncio.run(scenario())


def test_concurrent_misses_share_one_load() -> None:
    calls: list[int] = []

    def load() -> tuple[Any, Any]:
        time.sleep(0.1)
        calls.append(1)
        return SimpleNamespace(owner="o"), _status(1)

    async def scenario() -> None:
        cache = StatusCache(ttl=1)
        got = await asyncio.gather(*(cache.get("j", load) for _ in range(50)))
        assert len({id(e) for e in got}) == 1 and calls == [1]

    asyncio.run(scenario())


def test_poll_does_not_touch_the_store(tmp_path: Path, small_video: Path) -> None:
    """After the first poll, polls within the interval make no store call at all, and the
    body is the JobStatus document."""
    settings = Settings(data_dir=tmp_path / "data", poll_interval=30)
    client = TestClient(create_app(settings), base_url="http://127.0.0.1")
    job = post_video(client, small_video).json()["id"]
    first = client.get(f"/v1/jobs/{job}")
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    JobStatus.model_validate_json(first.content)
    store = client.app.state.store
    calls: list[str] = []
    inner = store.inner
    for name in ("get_bytes", "list", "exists", "get_stream"):
        orig = getattr(inner, name)

        def spy(*a: Any, _orig: Any = orig, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _orig(*a, **kw)

        setattr(inner, name, spy)
    for _ in range(50):
        r = client.get(f"/v1/jobs/{job}")
        assert r.status_code == 200 and r.content == first.content
    assert calls == [], calls
    client.close()
