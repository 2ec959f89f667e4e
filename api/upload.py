"""Receive an upload without ever holding it in memory, enforcing the size limit while
the bytes arrive (DESIGN.md §5: `await file.read()` or a spooled form blow up the API).

The body goes to a temp file on the data disk: probing needs a seekable file, and only a
video that passed the probe is copied to the object store, so a refused upload leaves
nothing there. Multipart (`file` + option fields) and raw bodies (options in the query
string) are both accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.problems import Problem

MAX_FIELDS = 32
MAX_FIELD_BYTES = 4096
MULTIPART_SLACK = 64 * 1024  # boundaries and option fields on top of the file itself
RAW_TYPES = ("application/octet-stream", "video/")


@dataclass
class Upload:
    path: Path | None = None  # None: the request had no file
    size: int = 0
    filename: str | None = None
    sha256: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def safe_filename(name: str | None) -> str | None:
    """The client's file name as metadata only: last path component (either separator),
    no control characters (NUL, newlines), at most 255 characters; never a path."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())[:255]
    return base if base not in ("", ".", "..") else None


def _too_large(limit: int) -> Problem:
    return Problem(
        413, f"the upload exceeds the limit of {limit} bytes", code="upload-too-large", limit=limit
    )


class _FileSink:
    """Temp file + running size check + hash, fed chunk by chunk."""

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-", suffix=".bin")
        self.path = Path(name)
        self.f: BinaryIO = os.fdopen(fd, "wb")
        self.limit = limit
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _too_large(self.limit)
        self.hash.update(data)
        self.f.write(data)

    def close(self) -> None:
        self.f.close()


async def receive_upload(request: Request, tmp_dir: Path, limit: int) -> Upload:
    """Stream the request body into an `Upload` (raises Problem 400/413/415)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MULTIPART_SLACK:
        raise _too_large(limit)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    ctype_s = ctype.decode("latin-1").lower()
    if ctype_s == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise Problem(400, "multipart body without a boundary", code="bad-multipart")
        return await _receive_multipart(request, tmp_dir, limit, boundary)
    if ctype_s.startswith(RAW_TYPES):
        return await _receive_raw(request, tmp_dir, limit)
    raise Problem(
        415,
        "send multipart/form-data with a `file` field, or the video as the raw body "
        "(application/octet-stream or video/*)",
        code="unsupported-media-type",
    )


async def _receive_raw(request: Request, tmp_dir: Path, limit: int) -> Upload:
    sink = _FileSink(tmp_dir, limit)
    up = Upload(path=sink.path, fields=dict(request.query_params))
    try:
        async for chunk in request.stream():
            sink.write(chunk)
    except BaseException:
        sink.close()
        up.discard()
        raise
    sink.close()
    up.size, up.sha256 = sink.size, sink.hash.hexdigest()
    up.filename = safe_filename(request.headers.get("x-filename"))
    return up


async def _receive_multipart(
    request: Request, tmp_dir: Path, limit: int, boundary: bytes
) -> Upload:
    up = Upload()
    state: dict[str, Any] = {"headers": {}, "hfield": b"", "hvalue": b"", "name": None}
    sink: _FileSink | None = None
    value = bytearray()
    target: str | None = None  # "file", "field" or "skip" for the current part

    def on_part_begin() -> None:
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["hfield"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["hvalue"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["hfield"].decode("latin-1").lower()] = state["hvalue"]
        state["hfield"], state["hvalue"] = b"", b""

    def on_headers_finished() -> None:
        nonlocal sink, target
        _disp, opts = parse_options_header(state["headers"].get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        value.clear()
        if name == "file":
            if sink is not None:
                raise Problem(400, "more than one `file` part", code="bad-multipart")
            sink = _FileSink(tmp_dir, limit)
            up.path = sink.path
            fn = opts.get(b"filename")
            up.filename = safe_filename(fn.decode("utf-8", "replace")) if fn else None
            target = "file"
        elif b"filename" in opts:
            target = "skip"  # other file parts are ignored, never stored
        else:
            if len(up.fields) >= MAX_FIELDS:
                raise Problem(400, "too many form fields", code="bad-multipart")
            target = "field"

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if target == "file":
            assert sink is not None
            sink.write(data[start:end])
        elif target == "field":
            value.extend(data[start:end])
            if len(value) > MAX_FIELD_BYTES:
                raise Problem(
                    400, f"form field {state['name']!r} is too long", code="bad-multipart"
                )

    def on_part_end() -> None:
        if target == "field":
            up.fields[state["name"]] = value.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        _abort(sink, up)
        raise Problem(400, f"malformed multipart body: {e}", code="bad-multipart") from None
    except BaseException:
        _abort(sink, up)
        raise
    if sink is not None:
        sink.close()
        up.size, up.sha256 = sink.size, sink.hash.hexdigest()
    return up


def _abort(sink: _FileSink | None, up: Upload) -> None:
    if sink is not None:
        sink.close()
    up.discard()
