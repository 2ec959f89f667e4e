"""Receive an upload without ever holding it in memory, enforcing the size limit while
the bytes arrive (`await file.read()` or a spooled form would hold the whole video in the API).

The body goes to a temp file on the data disk: probing needs a seekable file, and only a
video that passed the probe is copied to the object store, so a refused upload leaves
nothing there. Multipart (`file` + option fields) and raw bodies (options in the query
string) are both accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qsl

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.problems import Problem

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELDS = 32
MAX_FIELD_BYTES = 4096
MULTIPART_SLACK = 64 * 1024  # boundaries and option fields on top of the file itself
RAW_TYPES = ("application/octet-stream", "video/")
FIELD_TYPES = ("application/json", "application/x-www-form-urlencoded")


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
    if ctype_s in FIELD_TYPES:
        return await _receive_fields(request, ctype_s)
    raise Problem(
        415,
        "send multipart/form-data with a `file` field, the video as the raw body "
        "(application/octet-stream or video/*), or the fields with an `upload_id` as "
        "application/json or application/x-www-form-urlencoded",
        code="unsupported-media-type",
    )


async def _receive_fields(request: Request, ctype: str) -> Upload:
    """Fields only (a tus `upload_id` and options): a small body, read whole."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MULTIPART_SLACK:
            raise Problem(413, "the fields are too long", code="fields-too-large")
    if ctype == "application/json":
        fields = _json_fields(bytes(body))
    else:
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if len(fields) > MAX_FIELDS:
        raise Problem(400, "too many fields", code="bad-multipart")
    if "file" in fields:
        raise Problem(
            422,
            "a video cannot be a field: send it as multipart `file`, as the raw body, or "
            "upload it to /v1/uploads and send its `upload_id`",
            code="no-file",
        )
    return Upload(fields=fields)


def _json_fields(body: bytes) -> dict[str, str]:
    """A JSON object's fields as the strings a form would carry (null: not sent)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise Problem(400, "the body is not JSON", code="bad-json") from None
    if not isinstance(data, dict):
        raise Problem(400, "send a JSON object of fields", code="bad-json")
    fields: dict[str, str] = {}
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, dict | list):
            raise Problem(422, f"field {k!r} must be a string or a number", code="bad-field")
        fields[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
    return fields


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


class _MultipartParts:
    """python-multipart's streaming parser callbacks: the `file` part to a `_FileSink`,
    option fields into `Upload.fields` (bounded in count and size), other file parts
    skipped. python-multipart (FastAPI's own parser) is kept over streaming-form-data,
    which needs every field name registered up front: an unknown option could then not
    be refused by its name."""

    def __init__(self, tmp_dir: Path, limit: int) -> None:
        self.tmp_dir, self.limit = tmp_dir, limit
        self.up = Upload()
        self.sink: _FileSink | None = None
        self.headers: dict[str, bytes] = {}
        self.hfield, self.hvalue = b"", b""
        self.name = ""
        self.value = bytearray()
        self.target: str | None = None  # "file", "field" or "skip" for the current part

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.hfield += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.hvalue += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.hfield.decode("latin-1").lower()] = self.hvalue
        self.hfield, self.hvalue = b"", b""

    def on_headers_finished(self) -> None:
        _disp, opts = parse_options_header(self.headers.get("content-disposition", b""))
        self.name = opts.get(b"name", b"").decode("utf-8", "replace")
        self.value.clear()
        if self.name == "file":
            self._open_file(opts.get(b"filename"))
        elif b"filename" in opts:
            self.target = "skip"  # other file parts are ignored, never stored
        elif len(self.up.fields) >= MAX_FIELDS:
            raise Problem(400, "too many form fields", code="bad-multipart")
        else:
            self.target = "field"

    def _open_file(self, filename: bytes | None) -> None:
        if self.sink is not None:
            raise Problem(400, "more than one `file` part", code="bad-multipart")
        self.sink = _FileSink(self.tmp_dir, self.limit)
        self.up.path = self.sink.path
        self.up.filename = safe_filename(filename.decode("utf-8", "replace")) if filename else None
        self.target = "file"

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.target == "file" and self.sink is not None:
            self.sink.write(data[start:end])
        elif self.target == "field":
            self.value.extend(data[start:end])
            if len(self.value) > MAX_FIELD_BYTES:
                raise Problem(400, f"form field {self.name!r} is too long", code="bad-multipart")

    def on_part_end(self) -> None:
        if self.target == "field":
            self.up.fields[self.name] = self.value.decode("utf-8", "replace")

    def finish(self) -> Upload:
        if self.sink is not None:
            self.sink.close()
            self.up.size, self.up.sha256 = self.sink.size, self.sink.hash.hexdigest()
        return self.up

    def abort(self) -> None:
        _abort(self.sink, self.up)


async def _receive_multipart(
    request: Request, tmp_dir: Path, limit: int, boundary: bytes
) -> Upload:
    parts = _MultipartParts(tmp_dir, limit)
    parser = MultipartParser(boundary, parts.callbacks())
    # The whole body counts, not only the `file` part: other parts are skipped, never
    # stored, but reading an unbounded body is the cost itself.
    body_limit, received = limit + MULTIPART_SLACK, 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        parts.abort()
        raise Problem(400, f"malformed multipart body: {e}", code="bad-multipart") from None
    except BaseException:
        parts.abort()
        raise
    return parts.finish()


def _abort(sink: _FileSink | None, up: Upload) -> None:
    if sink is not None:
        sink.close()
    up.discard()
