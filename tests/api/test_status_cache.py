from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from api.status_cache import StatusCache


def test_hits_within_ttl_then_reloads_and_drop_forgets() -> None:
    calls: list[int] = []
    job: Any = SimpleNamespace(owner="alice")

    def load() -> tuple[Any, Any]:
        calls.append(1)
        return job, f"status-{len(calls)}"

    cache = StatusCache(ttl=0.2)
    assert cache.get("j", load) == ("alice", "status-1")
    assert cache.get("j", load) == ("alice", "status-1")  # cached: the store is not read
    time.sleep(0.25)
    assert cache.get("j", load) == ("alice", "status-2")
    cache.drop("j")
    assert cache.get("j", load) == ("alice", "status-3")
    assert cache.get("gone", lambda: (None, None)) == (None, None)
