"""The API's defences (docs/reliability.md): fail fast while the store is down, a per-key
rate limit, and CORS closed unless configured.

- `GuardedStore` wraps the API's object store in a circuit breaker: after a store call
  fails with StoreError (the store is unreachable or failing; never a name the store
  refuses, which is InvalidKey, core/storage.py), every call fails at once for
  `cooldown` seconds (the API answers 503 + Retry-After), instead of each request
  waiting out the S3 client's timeouts and retries while the store hangs. `ping`
  (readyz) always goes through and closes the breaker when the store answers again.
- `RateLimitMiddleware` is a token bucket per valid API key, in memory of one API
  process; without keys, and for a bearer value that is not a configured key, the bucket
  is the client address's (any made-up token getting its own bucket would make the limit
  a formality): `UARNVC_RATE_LIMIT` requests/s sustained, bursts of
  `UARNVC_RATE_BURST`; over it, 429 problem+json with Retry-After. Only `/v1` counts
  (probes, metrics and the web page are not limited). With N API replicas the effective
  limit is N times higher; put a shared limiter in front for a global one.
- CORS: no `Access-Control-Allow-Origin` at all unless `UARNVC_CORS_ORIGINS` lists
  origins (bearer keys in a browser page of another origin are then the operator's call).
"""

from __future__ import annotations

import builtins
import hmac
import math
import threading
import time
from typing import Any, BinaryIO

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import retry_later
from core.jobs import owner_id
from core.storage import ObjectStore, StoreError

STORE_RETRY_AFTER = 5  # seconds a client is told to wait while the store is down


class GuardedStore:
    """An ObjectStore that stops calling a failing backend for `cooldown` seconds."""

    def __init__(self, inner: ObjectStore, cooldown: float = STORE_RETRY_AFTER) -> None:
        self.inner = inner
        self.url = inner.url
        self.cooldown = cooldown
        self._open_until = 0.0
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _trip(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.cooldown

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.is_open:
            raise StoreError("object store unavailable (recent failures; not retried yet)")
        try:
            return getattr(self.inner, name)(*args, **kwargs)
        except StoreError:
            self._trip()
            raise

    def ping(self) -> None:
        try:
            self.inner.ping()
        except StoreError:
            self._trip()
            raise
        with self._lock:
            self._open_until = 0.0

    def get_stream(self, key: str) -> Any:
        if self.is_open:
            raise StoreError("object store unavailable (recent failures; not retried yet)")
        return self.inner.get_stream(key)

    # Every other store call goes through the breaker; spelled out (not __getattr__) so
    # the type checker sees a whole ObjectStore.
    def put_stream(self, key: str, src: BinaryIO) -> int:
        return self._call("put_stream", key, src)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_bytes", key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self._call("put_if_absent", key, data)

    def get_bytes(self, key: str) -> bytes:
        return self._call("get_bytes", key)

    def exists(self, key: str) -> bool:
        return self._call("exists", key)

    def list(self, prefix: str, *, start_after: str | None = None) -> builtins.list[str]:
        return self._call("list", prefix, start_after=start_after)

    def list_sizes(self, prefix: str) -> dict[str, int]:
        return self._call("list_sizes", prefix)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        return self._call("list_dirs", prefix)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def delete_prefix(self, prefix: str) -> int:
        return self._call("delete_prefix", prefix)


class TokenBucket:
    """`rate` tokens/s up to `burst`; `take()` returns 0 or the seconds until a token."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.t = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimitMiddleware:
    """Pure ASGI (never buffers a streaming response); keyed by the bearer key's owner id,
    so the key itself is not kept in memory longer than the request."""

    MAX_BUCKETS = 100_000  # forget idle callers rather than grow without bound

    def __init__(
        self, app: ASGIApp, rate: float, burst: int, keys: list[str] | tuple[str, ...] = ()
    ) -> None:
        self.app, self.rate, self.burst = app, rate, burst
        self.keys = [k.encode() for k in keys]
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()

    def _valid(self, token: str) -> bool:
        ok = False
        for key in self.keys:  # constant time, as in api/auth.py
            ok |= hmac.compare_digest(token.encode(), key)
        return ok

    def _who(self, scope: Scope) -> str:
        if self.keys:
            for name, value in scope.get("headers", []):
                if name == b"authorization":
                    scheme, _, token = value.decode("latin-1").partition(" ")
                    token = token.strip()
                    if scheme.lower() == "bearer" and token and self._valid(token):
                        return "key:" + owner_id(token)
                    break
        client = scope.get("client")
        return "addr:" + (client[0] if client else "?")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or self.rate <= 0:
            await self.app(scope, receive, send)
            return
        who = self._who(scope)
        with self.lock:
            bucket = self.buckets.get(who)
            if bucket is None:
                if len(self.buckets) >= self.MAX_BUCKETS:
                    self.buckets.clear()
                bucket = self.buckets[who] = TokenBucket(self.rate, self.burst)
            wait = bucket.take()
        if wait > 0:
            retry = max(1, math.ceil(wait))
            resp = retry_later(
                429,
                f"rate limit of {self.rate:g} requests/s (bursts of {self.burst}) exceeded",
                code="rate-limited",
                instance=scope["path"],
                seconds=retry,
            )
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Rate limit and (opt-in) CORS, from the app's settings."""
    s = app.state.settings
    if s.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=s.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After", "Idempotent-Replayed"],
        )
    app.add_middleware(
        RateLimitMiddleware, rate=s.rate_limit, burst=s.rate_burst, keys=list(s.api_keys)
    )
