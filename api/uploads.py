"""`/v1/uploads`: tus 1.0 resumable uploads (core, creation, termination, expiration).

The protocol is tuspyserver's router; what this module adds is where the bytes go and
who may touch them:

- `StoreTusStorage`, a tuspyserver storage backend over the service's own object store
  (core/storage.py: a local directory or S3), laid out as core/uploads.py says. The
  library's own S3 backend was not used: it keeps an S3 multipart upload open per tus
  upload, whose parts must be >= 5 MiB except the last, so a PATCH cut after 1 MiB could
  never be resumed; and it would be a second store configuration beside
  `UARNVC_STORE_URL`.
- The same bearer keys as `/v1/jobs`: an upload belongs to the key that created it and is
  404 to every other key.
- The expiry is `UARNVC_UPLOAD_EXPIRE_SECONDS` after creation (the library counts whole
  days); expired unfinished uploads are deleted by a sweep that job and upload creation
  run at most once a minute per API process.
- What the library advertises but cannot do on a storage backend (concatenation,
  creation-with-upload) is left out of `Tus-Extension`, and a POST with a body is refused
  (the library would read that body whole into memory). The library has no checksum
  extension, so none is offered.

`POST /v1/jobs` with `upload_id` turns a finished upload into a job: `spool` copies it to
a temp file with the same size limit and hash as a multipart upload, then the job is
probed and stored exactly like one (api/job_service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tuspyserver import create_tus_router
from tuspyserver.storage import TusStorage

from api.auth import current_owner
from api.problems import PROBLEM_JSON, Problem
from api.upload import Upload, _FileSink, _too_large
from core import uploads as up
from core.settings import Settings
from core.storage import ObjectStore

log = logging.getLogger(__name__)
PREFIX = "/v1/uploads"
PART_BYTES = 8 * 1024 * 1024  # a PATCH body is stored in parts of at most this size
LOCK_WAIT = 5.0  # seconds a PATCH waits for another PATCH of the same upload (this process)
SWEEP_EVERY = 60.0
EXTENSIONS = "creation,creation-defer-length,expiration,termination"


class StoreTusStorage(TusStorage):
    """tuspyserver's storage contract on an ObjectStore (layout: core/uploads.py).

    The offset the library reads back is always the stored one (the chain of parts), not
    the one it last wrote into the record, so a replica that died mid-PATCH, or one that
    lost a race, never leaves a record that claims bytes the store does not have.
    """

    def __init__(self, store: ObjectStore, ttl: int) -> None:
        self.store, self.ttl = store, ttl
        self._buffers: dict[str, tuple[int, bytearray]] = {}  # uid -> (offset, pending)
        self._locks: dict[str, asyncio.Lock] = {}

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    # --- data
    async def create(self, uid: str) -> None:
        up.UploadKeys(uid)  # validates the id; nothing to write before the record

    async def exists(self, uid: str) -> bool:
        if not up.valid_upload_id(uid):
            return False
        return bool(await self._run(self.store.exists, up.UploadKeys(uid).info))

    async def size(self, uid: str) -> int:
        return int(await self._run(up.stored_size, self.store, uid))

    async def append(self, uid: str, chunk: bytes) -> None:
        if uid not in self._buffers:
            self._buffers[uid] = (await self.size(uid), bytearray())
        buf = self._buffers[uid][1]
        buf.extend(chunk)
        if len(buf) >= PART_BYTES:
            await self._write_part(uid)

    async def _write_part(self, uid: str) -> None:
        offset, buf = self._buffers.get(uid, (0, bytearray()))
        if not buf:
            return
        data = bytes(buf)
        created = await self._run(self.store.put_if_absent, up.UploadKeys(uid).part(offset), data)
        if not created:  # another replica wrote these bytes first: this PATCH lost
            self._buffers.pop(uid, None)
            raise HTTPException(409, "another request is writing this upload; HEAD and resume")
        self._buffers[uid] = (offset + len(data), bytearray())

    async def flush(self, uid: str) -> None:
        try:
            await self._write_part(uid)
        finally:
            self._buffers.pop(uid, None)

    async def finalize(self, uid: str) -> None:
        """Nothing to seal: the parts are the upload (a job reads them in order)."""

    async def read(self, uid: str) -> bytes | None:
        """Unused by the routes mounted here (no download route); whole, for the contract."""
        import io

        buf = io.BytesIO()
        await self._run(lambda: sum(up.copy_to(self.store, uid, buf)))
        return buf.getvalue()

    async def delete(self, uid: str) -> None:
        self._buffers.pop(uid, None)
        await self._run(up.delete_upload, self.store, uid)

    # --- the record
    async def read_info(self, uid: str) -> dict | None:
        if not up.valid_upload_id(uid):
            return None
        info = await self._run(up.read_info, self.store, uid)
        if info is None:
            return None
        info["offset"] = await self.size(uid)
        return info

    async def write_info(self, uid: str, data: dict) -> None:
        old = await self._run(up.read_info, self.store, uid) or {}
        # Rounded up: the header carries whole seconds, and an upload must never expire
        # before the time its Upload-Expires promised (rounding down could cut a 1 s TTL to 0).
        expires_at = old.get("expires_at") or math.ceil(time.time() + self.ttl)
        meta = dict(data.get("metadata") or {})
        # The library's HEAD answers 400 without these two; a tus client need not send them.
        meta.setdefault("filename", "upload")
        meta.setdefault("filetype", "application/octet-stream")
        record = {
            **data,
            "metadata": meta,
            "offset": await self.size(uid),
            "expires_at": expires_at,
            "expires": formatdate(expires_at, usegmt=True),
        }
        body = _json(record)
        await self._run(self.store.put_bytes, up.UploadKeys(uid).info, body)

    # --- housekeeping
    async def list_uids(self) -> list[str]:
        dirs = await self._run(self.store.list_dirs, up.PREFIX)
        return [d for d in dirs if up.valid_upload_id(d)]

    def location(self, uid: str) -> str:
        # Never a path open() could create: the library's creation-with-upload branch
        # tries to, and that branch is refused before it (see `_refuse_body`).
        return f"{self.store.url.rstrip('/')}/{up.UploadKeys(uid).prefix}"

    @contextlib.asynccontextmanager
    # The base class annotates the undecorated generator; asynccontextmanager is what it calls.
    async def lock(self, uid: str) -> AsyncIterator[None]:  # type: ignore[override]
        """One PATCH per upload at a time in this process; across replicas the exclusive
        parts decide (the module docstring of core/uploads.py)."""
        lk = self._locks.setdefault(uid, asyncio.Lock())
        try:
            async with asyncio.timeout(LOCK_WAIT):
                await lk.acquire()
        except TimeoutError:
            raise TimeoutError("another request is writing this upload; retry") from None
        self._buffers.pop(uid, None)  # a PATCH that failed before flushing left its own
        try:
            yield
        finally:
            self._buffers.pop(uid, None)
            lk.release()
            if not lk.locked() and len(self._locks) > 1000:
                self._locks.pop(uid, None)


def _json(data: dict) -> bytes:
    import json

    return json.dumps(data, default=str).encode()


# ------------------------------------------------------------------------- the router


def _store(request: Request) -> ObjectStore:
    return request.app.state.store


async def tus_auth(request: Request, owner: str = Depends(current_owner)) -> None:
    """The jobs routes' key check, plus: an upload is only its creator's (404 to others,
    and for ids that cannot be an upload)."""
    version = request.headers.get("tus-resumable")
    if version is None and request.method != "OPTIONS":
        raise Problem(400, "send `Tus-Resumable: 1.0.0`", code="tus-resumable-missing")
    if "upload-concat" in request.headers:  # the library's concatenation needs local files
        raise Problem(400, "the concatenation extension is not supported", code="no-concatenation")
    uid = request.path_params.get("uuid")
    if uid is None:
        return
    got = await anyio.to_thread.run_sync(up.upload_owner, _store(request), uid)
    if got is None or got != owner:
        raise Problem(404, f"no upload {uid[:64]}", code="upload-not-found")


def _make_file_dep(settings: Settings) -> Callable[..., Any]:
    async def file_dep(request: Request, owner: str = Depends(current_owner)) -> Any:
        """On creation: a fresh id, its owner recorded before the upload exists."""

        async def choose(metadata: dict) -> dict | None:
            if request.method != "POST":
                return None
            uid = secrets.token_hex(16)
            await anyio.to_thread.run_sync(up.record_owner, _store(request), uid, owner)
            return {"uid": uid}

        return choose

    return file_dep


def _make_pre_create_dep(settings: Settings) -> Callable[..., Any]:
    async def pre_create_dep(request: Request) -> Any:
        await maybe_sweep(_store(request), settings)

        def check(_metadata: dict, info: dict) -> None:
            if request.headers.get("content-length", "0") not in ("", "0"):
                raise Problem(
                    400,
                    "send the bytes with PATCH after creating the upload "
                    "(creation-with-upload is not supported)",
                    code="creation-with-upload",
                )
            size = info.get("size")
            if size is not None and size < 0:
                raise Problem(400, "Upload-Length must be >= 0", code="bad-upload-length")
            if size is not None and size > settings.max_upload_bytes:
                raise _too_large(settings.max_upload_bytes)
            if size is None and not info.get("defer_length"):
                raise Problem(
                    400, "send Upload-Length (or Upload-Defer-Length: 1)", code="no-upload-length"
                )

        return check

    return pre_create_dep


class TusHeadersMiddleware:
    """Fixes up what the library answers under /v1/uploads: Tus-Extension lists only what
    works here, and the creation answer's Upload-Expires is the stored expiry (the
    library counts whole days). Pure ASGI, so streaming PATCH bodies pass untouched."""

    def __init__(self, app: ASGIApp, storage: StoreTusStorage) -> None:
        self.app, self.storage = app, storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_fixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                old = dict(message.get("headers", []))
                drop = (b"tus-extension", b"upload-expires")
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in drop]
                if b"tus-extension" in old:
                    headers.append((b"tus-extension", EXTENSIONS.encode()))
                if b"upload-expires" in old:
                    headers.append((b"upload-expires", await self._expires(scope, old)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_fixed)

    async def _expires(self, scope: Scope, headers: dict[bytes, bytes]) -> bytes:
        loc = headers.get(b"location", b"").decode("latin-1") or scope["path"]
        uid = loc.rstrip("/").rsplit("/", 1)[-1]
        info = await self.storage.read_info(uid) if up.valid_upload_id(uid) else None
        if info and info.get("expires"):
            return str(info["expires"]).encode()
        return headers.get(b"upload-expires", b"")


TUS_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {
        "description": desc,
        "content": {PROBLEM_JSON: {"schema": {"type": "object"}}},
    }
    for code, desc in (
        (410, "the upload expired"),
        (412, "Tus-Resumable is not 1.0.0"),
    )
}


def install(app: FastAPI, settings: Settings, store: ObjectStore) -> StoreTusStorage:
    """Mount tus at /v1/uploads; returns the storage (app.state.tus_storage)."""
    storage = StoreTusStorage(store, settings.upload_expire_seconds)
    router = create_tus_router(
        prefix=PREFIX,
        files_dir=str(settings.tmp_dir / "tus"),  # unused with a storage backend
        max_size=settings.max_upload_bytes,
        # auth: `tus_auth` below, not here: the library would run it after reading a PATCH body
        days_to_keep=max(1, math.ceil(settings.upload_expire_seconds / 86400)),
        pre_create_dep=_make_pre_create_dep(settings),
        file_dep=_make_file_dep(settings),
        tags=["uploads"],
        storage=storage,
    )
    # Route-level dependencies run before the endpoint's own, so the key and the
    # upload's owner are checked before the library reads a byte of a PATCH body.
    app.include_router(router, responses=TUS_RESPONSES, dependencies=[Depends(tus_auth)])
    app.add_middleware(TusHeadersMiddleware, storage=storage)
    _clean_openapi(app)
    app.state.tus_storage = storage
    return storage


def _clean_openapi(app: FastAPI) -> None:
    """Drop what the library's signatures leak into the schema but no client sends as a
    parameter: `Content-Length` (the transport's; a made-up value never reaches the app)
    and the internal `post_request` flag of its PATCH."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        for path, ops in schema.get("paths", {}).items():
            if not path.startswith(PREFIX):
                continue
            for op in ops.values():
                params = op.get("parameters") or []
                op["parameters"] = [
                    p for p in params if (p.get("in"), p.get("name").lower()) not in _HIDDEN_PARAMS
                ]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_HIDDEN_PARAMS = {("header", "content-length"), ("query", "post_request")}


# --------------------------------------------------------------------- used by jobs


_last_sweep = 0.0


async def maybe_sweep(store: ObjectStore, settings: Settings) -> None:
    """Delete expired uploads, at most once a minute per process (in the background of a
    creation request: a sweep's failure never fails the request)."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_EVERY:
        return
    _last_sweep = now
    try:
        n = await anyio.to_thread.run_sync(up.sweep_expired, store, settings.upload_expire_seconds)
    except Exception as e:  # the sweep is housekeeping
        log.warning("upload sweep failed: %s", e)
        return
    if n:
        log.info("deleted %d expired upload(s)", n)


def spool(store: ObjectStore, upload_id: str, owner: str, tmp_dir: Path, limit: int) -> Upload:
    """A finished upload as an `Upload` (temp file, size, sha256), like a multipart one:
    404 unknown/another key's/expired, 409 not finished, 413 over the limit."""
    not_found = Problem(404, f"no upload {upload_id[:64]}", code="upload-not-found")
    if up.upload_owner(store, upload_id) != owner:
        raise not_found
    info = up.read_info(store, upload_id)
    if info is None:
        raise not_found
    if up.is_expired(info):
        raise not_found
    size = up.stored_size(store, upload_id)
    if info.get("size") is None or size != info.get("size"):
        raise Problem(
            409,
            f"upload {upload_id} has {size} of {info.get('size')} bytes; finish it first",
            code="upload-incomplete",
        )
    if size > limit:
        raise _too_large(limit)
    sink = _FileSink(tmp_dir, limit)
    result = Upload(path=sink.path, filename=_filename(info))
    try:
        for n in up.copy_to(store, upload_id, _HashingWriter(sink)):
            del n
    except BaseException:
        sink.close()
        result.discard()
        raise
    sink.close()
    result.size, result.sha256 = sink.size, sink.hash.hexdigest()
    return result


class _HashingWriter:
    def __init__(self, sink: _FileSink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink.write(data)


def _filename(info: dict) -> str | None:
    from api.upload import safe_filename

    name = (info.get("metadata") or {}).get("filename")
    return safe_filename(name) if name and name != "upload" else None
