"""The store circuit breaker and the rate limiter's idea of who is calling."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.guard import GuardedStore, RateLimitMiddleware
from core.jobs import owner_id
from core.storage import InvalidKey, LocalStore, StoreError


def test_breaker_opens_on_store_errors_only(tmp_path: Path) -> None:
    store = GuardedStore(LocalStore(tmp_path / "s"))
    store.put_bytes("a/b", b"x")
    for bad in ("a/" + "9" * 300, "a/b/c"):  # too long; a file used as a directory
        with pytest.raises(InvalidKey):
            store.get_bytes(bad)
    assert not store.is_open and store.get_bytes("a/b") == b"x"

    def fail(*_a: object) -> bytes:
        raise StoreError("disk on fire")

    store.inner.get_bytes = fail  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        store.get_bytes("a/b")
    assert store.is_open


def _scope(auth: bytes | None, addr: str = "10.0.0.1") -> dict:
    headers = [(b"authorization", auth)] if auth is not None else []
    return {"type": "http", "headers": headers, "client": (addr, 1234)}


def test_bucket_is_the_address_unless_the_key_is_valid() -> None:
    keyless = RateLimitMiddleware(lambda *a: None, rate=1, burst=1)  # type: ignore[arg-type]
    assert keyless._who(_scope(b"Bearer anything")) == "addr:10.0.0.1"
    assert keyless._who(_scope(b"Bearer other")) == "addr:10.0.0.1"
    keyed = RateLimitMiddleware(lambda *a: None, rate=1, burst=1, keys=["k1", "k2"])  # type: ignore[arg-type]
    assert keyed._who(_scope(b"Bearer k2")) == "key:" + owner_id("k2")
    assert keyed._who(_scope(b"bearer  k1 ")) == "key:" + owner_id("k1")
    for made_up in (b"Bearer k3", b"Bearer k1x", b"Basic k1", b"Bearer ", b"\xff\xfe"):
        assert keyed._who(_scope(made_up)) == "addr:10.0.0.1", made_up
    assert keyed._who(_scope(None, "10.9.9.9")) == "addr:10.9.9.9"
