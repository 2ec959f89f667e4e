"""Resumable (tus) uploads in the object store, so any API replica can resume any upload.

Layout, one prefix per upload (the id is the last path segment of the upload's URL):

    uploads/{id}/owner             {"owner": owner id of the creating key, "at": unix time}
    uploads/{id}/info.json         the tus server's upload record (length, metadata, expiry)
    uploads/{id}/parts/{offset}    the bytes [offset, offset + size), offset 16 digits

An object store cannot append, so each stretch of a PATCH body is one part object named
by its first byte's offset, created exclusively (`put_if_absent`). The upload's offset is
the end of the chain of parts that starts at 0, computed from one listing: it is always
what the store durably holds, whichever replica wrote it. Two replicas racing on one
offset cannot both write it (the second gets a conflict), and a part off the chain is
ignored, so no lock has to span replicas.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

from core.storage import ByteSink, NotFound, ObjectStore

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{32}")
PREFIX = "uploads/"


def valid_upload_id(upload_id: str) -> bool:
    return isinstance(upload_id, str) and UPLOAD_ID_RE.fullmatch(upload_id) is not None


class UploadKeys:
    """Object names of one upload (the layout above)."""

    def __init__(self, upload_id: str) -> None:
        if not valid_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}")
        self.id = upload_id
        self.prefix = f"{PREFIX}{upload_id}/"

    owner = property(lambda self: self.prefix + "owner")
    info = property(lambda self: self.prefix + "info.json")
    parts = property(lambda self: self.prefix + "parts/")

    def part(self, offset: int) -> str:
        return f"{self.parts}{offset:016d}"


def part_chain(store: ObjectStore, upload_id: str) -> list[tuple[str, int]]:
    """The parts that make the upload's bytes, in order: (key, size), from offset 0 on."""
    keys = UploadKeys(upload_id)
    sizes = store.list_sizes(keys.parts)
    by_offset: dict[int, tuple[str, int]] = {}
    for key, size in sizes.items():
        name = key[len(keys.parts) :]
        if name.isdigit() and size > 0:
            by_offset[int(name)] = (key, size)
    chain, offset = [], 0
    while offset in by_offset:
        key, size = by_offset[offset]
        chain.append((key, size))
        offset += size
    return chain


def stored_size(store: ObjectStore, upload_id: str) -> int:
    """Bytes durably stored: the tus `Upload-Offset`."""
    return sum(size for _key, size in part_chain(store, upload_id))


def record_owner(store: ObjectStore, upload_id: str, owner: str) -> None:
    """Written before the upload exists, so an upload never lacks its owner."""
    body = json.dumps({"owner": owner, "at": time.time()}).encode()
    store.put_bytes(UploadKeys(upload_id).owner, body)


def _owner_record(store: ObjectStore, upload_id: str) -> dict | None:
    try:
        raw = json.loads(store.get_bytes(UploadKeys(upload_id).owner))
    except (NotFound, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def upload_owner(store: ObjectStore, upload_id: str) -> str | None:
    if not valid_upload_id(upload_id):
        return None
    rec = _owner_record(store, upload_id)
    return str(rec.get("owner")) if rec else None


def read_info(store: ObjectStore, upload_id: str) -> dict | None:
    try:
        data = json.loads(store.get_bytes(UploadKeys(upload_id).info))
    except (NotFound, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_expired(info: dict, now: float | None = None) -> bool:
    """Past its expiry, finished or not: a finished upload no job was made from within
    the expiry is as abandoned as an unfinished one."""
    expires = info.get("expires_at")
    return isinstance(expires, int | float) and (now or time.time()) > expires


def copy_to(store: ObjectStore, upload_id: str, dst: ByteSink) -> Iterator[int]:
    """Write the upload's bytes to `dst` part by part (bounded memory); yields the bytes
    written after each piece, so the caller can enforce a limit while copying."""
    for key, _size in part_chain(store, upload_id):
        with store.get_stream(key) as src:
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
                yield len(chunk)


def delete_upload(store: ObjectStore, upload_id: str) -> None:
    """Data first, the owner record last: a half-deleted upload is still an upload."""
    keys = UploadKeys(upload_id)
    store.delete_prefix(keys.parts)
    store.delete(keys.info)
    store.delete_prefix(keys.prefix)


def sweep_expired(store: ObjectStore, ttl: float, now: float | None = None) -> int:
    """Delete unfinished uploads past their expiry, and uploads whose record was never
    written (a crash between the owner and the info) once `ttl` has passed; returns how
    many. Safe to run from any number of processes at once."""
    now = now or time.time()
    n = 0
    for upload_id in store.list_dirs(PREFIX):
        if not valid_upload_id(upload_id):
            continue
        info = read_info(store, upload_id)
        if info is None:  # being created (owner written, record not yet), or debris
            rec = _owner_record(store, upload_id) or {}
            at = rec.get("at")
            if isinstance(at, int | float) and now - at < ttl:
                continue
        elif not is_expired(info, now):
            continue
        delete_upload(store, upload_id)
        n += 1
    return n
