"""Object store: the single source of truth of the service (docs/service.md).

Two backends behind one protocol: `LocalStore` (a directory, the embedded default) and
`S3Store` (boto3; AWS S3, MinIO or any S3-compatible endpoint). Everything streams: a
video is never held whole in memory. Keys are `/`-separated relative names; the stores
refuse anything that could escape their root.

Errors: `NotFound` (a `KeyError`) for a missing key; `InvalidKey` (a `ValueError`) for a
name no store can hold (checked before any call, and what a backend says of a name);
`StoreError` for everything a retry might fix (network, throttling, disk). Workers retry
the latter with backoff, and only a `StoreError` opens the API's circuit breaker: one
request's bad name never makes the store look down (api/guard.py).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from core.settings import Settings

COPY_CHUNK = 1024 * 1024
_KEY_RE = re.compile(r"[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*")
MAX_KEY = 900  # S3 allows 1024 bytes; room for the store's own prefix
MAX_PART = 200  # a file name on most file systems may have 255 bytes; room for temp names
# What the OS says of a name rather than of the disk: the request's fault, not the store's.
_NAME_ERRNOS = {
    errno.ENAMETOOLONG,
    errno.EINVAL,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ELOOP,
    errno.EEXIST,
}


class StoreError(RuntimeError):
    """A store operation failed in a way a retry may fix."""


class NotFound(KeyError):
    """The key does not exist."""


class InvalidKey(ValueError):
    """No store can hold this name (never retried, never a sign the store is down)."""


def check_key(key: str) -> str:
    """Refuse keys that are empty, absolute, contain `..` (no path traversal) or are too
    long for a file system or S3."""
    parts = key.split("/")
    if (
        not _KEY_RE.fullmatch(key)
        or any(part in (".", "..") for part in parts)
        or len(key) > MAX_KEY
        or any(len(part) > MAX_PART for part in parts)
    ):
        shown = key if len(key) <= 80 else key[:77] + "..."
        raise InvalidKey(f"invalid object key {shown!r}")
    return key


def _os_error(e: OSError, verb: str, key: str) -> Exception:
    if e.errno in _NAME_ERRNOS:
        return InvalidKey(f"cannot {verb} {key}: {e.strerror}")
    return StoreError(f"cannot {verb} {key}: {e}")


class ByteSink(Protocol):
    """Anything bytes can be written to (a file, a hash-and-size sink, a pipe buffer)."""

    def write(self, b: bytes, /) -> Any: ...


@runtime_checkable
class ObjectStore(Protocol):
    """What the service needs from a store; small enough for any blob store."""

    url: str

    def put_stream(self, key: str, src: BinaryIO) -> int:
        """Copy a readable binary file to `key` chunk by chunk; return bytes written."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object (metadata, chunks, states)."""

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist; True if this call created it."""

    def get_stream(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """Open `key` for streaming reads (a context manager yielding a binary file)."""

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        """Keys under `prefix`, sorted; those <= `start_after` are skipped."""

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Keys under `prefix` with their sizes in bytes, from one listing (for metrics)."""

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Immediate sub-"directories" of `prefix` (which ends with `/`), sorted, no slash."""

    def delete(self, key: str) -> None:
        """Remove one key; a missing key is not an error."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under `prefix`; return how many."""

    def ping(self) -> None:
        """Raise StoreError unless the store is reachable and writable-looking."""


# ------------------------------------------------------------------------------ local


class LocalStore:
    """A directory. Writes go to a temp file in the same directory and are renamed into
    place, so a reader never sees half an object and a crash leaves no torn file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _atomic(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        except OSError as e:
            raise _os_error(e, "write", key) from e
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_stream(self, key: str, src: BinaryIO) -> int:
        n = 0
        with self._atomic(key) as f:
            while chunk := src.read(COPY_CHUNK):
                f.write(chunk)
                n += len(chunk)
        return n

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._atomic(key) as f:
            f.write(data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # Write a temp file, then hard-link it into place: link() fails if the name exists,
        # which makes creation atomic and exclusive across processes on one machine.
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    @contextlib.contextmanager
    def get_stream(self, key: str) -> Iterator[BinaryIO]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise NotFound(key) from e
        except OSError as e:
            raise _os_error(e, "read", key) from e
        with f:
            yield f

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as e:
            raise NotFound(key) from e
        except OSError as e:
            raise _os_error(e, "read", key) from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _walk(self, prefix: str) -> Iterator[str]:
        # The directory holding the prefix, then filter by string prefix (S3 semantics).
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    yield rel

    def list(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        keys = sorted(self._walk(prefix))
        if start_after is not None:
            keys = [k for k in keys if k > start_after]
        return keys

    def list_sizes(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in self._walk(prefix):
            with contextlib.suppress(FileNotFoundError):  # deleted while we walk
                out[key] = (self.root / key).stat().st_size
        return out

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        base = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for k in keys:
            self.delete(k)
        if prefix.endswith("/"):
            shutil.rmtree(self.root / prefix.rstrip("/"), ignore_errors=True)
        return len(keys)

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"store directory {self.root} is not writable")


# --------------------------------------------------------------------------------- S3


class S3Store:
    """A bucket (and optional key prefix) through boto3.

    Large objects go through `upload_fileobj` (multipart, bounded memory); reads stream
    the response body. `put_if_absent` uses a conditional PUT (`If-None-Match: *`), which
    AWS S3, MinIO and moto support.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        timeouts: tuple[float, float] = (60.0, 60.0),
        max_attempts: int = 5,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=timeouts[0],
                read_timeout=timeouts[1],
            ),
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _err(self, e: Exception, key: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(key)
            if code in ("KeyTooLongError", "InvalidObjectName"):
                return InvalidKey(f"s3 refuses the name {key}: {code}")
        return StoreError(f"s3 {self.bucket}/{self._k(key)}: {e}")

    def put_stream(self, key: str, src: BinaryIO) -> int:
        counter = _CountingReader(src)
        try:
            self.client.upload_fileobj(counter, self.bucket, self._k(key))
        except Exception as e:
            raise self._err(e, key) from e
        return counter.n

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        except Exception as e:
            raise self._err(e, key) from e

    def put_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, IfNoneMatch="*")
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return False
            raise self._err(e, key) from e
        except Exception as e:
            raise self._err(e, key) from e
        return True

    @contextlib.contextmanager
    def get_stream(self, key: str) -> Iterator[BinaryIO]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
        except Exception as e:
            raise self._err(e, key) from e
        try:
            yield body
        finally:
            body.close()

    def get_bytes(self, key: str) -> bytes:
        with self.get_stream(key) as body:
            try:
                return body.read()
            except Exception as e:
                raise self._err(e, key) from e

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as e:
            err = self._err(e, key)
            if isinstance(err, NotFound):
                return False
            raise err from e
        return True

    def list(self, prefix: str, *, start_after: str | None = None) -> list[str]:
        kwargs = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            kwargs["StartAfter"] = self.prefix + start_after
        keys: builtins.list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                keys.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", []))
        except Exception as e:
            raise self._err(e, prefix or "/") from e
        return sorted(keys)

    def list_sizes(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for o in page.get("Contents", []):
                    out[o["Key"][len(self.prefix) :]] = int(o["Size"])
        except Exception as e:
            raise self._err(e, prefix or "/") from e
        return out

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        full = self.prefix + prefix
        out: builtins.list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for p in page.get("CommonPrefixes", []):
                    out.append(p["Prefix"][len(full) :].rstrip("/"))
        except Exception as e:
            raise self._err(e, prefix or "/") from e
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as e:
            err = self._err(e, key)
            if not isinstance(err, NotFound):
                raise err from e

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + k} for k in keys[i : i + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            except Exception as e:
                raise self._err(e, prefix) from e
        return len(keys)

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            raise StoreError(f"s3 bucket {self.bucket} not reachable: {e}") from e


class _CountingReader:
    """Wraps a file for upload_fileobj and counts bytes (boto3 does not report them)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.n = 0

    def read(self, size: int = -1) -> bytes:
        b = self.f.read(size)
        self.n += len(b)
        return b


# ---------------------------------------------------------------------------- factory


def store_from_url(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    fail_fast: bool = False,
) -> ObjectStore:
    """`file:///abs/path` (or a plain path) -> LocalStore; `s3://bucket/prefix` -> S3Store.

    `fail_fast` (the API): short S3 timeouts and one retry, so a request answers 503
    within seconds when the store hangs; workers keep boto3's patient defaults."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme else url
        return LocalStore(path)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"store URL {url!r} has no bucket")
        extra: dict = {"timeouts": (2.0, 5.0), "max_attempts": 2} if fail_fast else {}
        return S3Store(
            parsed.netloc,
            parsed.path.lstrip("/"),
            endpoint_url=endpoint_url,
            region=region,
            **extra,
        )
    raise ValueError(f"unsupported store URL {url!r}: use file:///path or s3://bucket/prefix")


def open_store(settings: Settings, *, fail_fast: bool = False) -> ObjectStore:
    """The store the settings name (local directory under the data dir by default)."""
    return store_from_url(
        settings.effective_store_url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        fail_fast=fail_fast,
    )
