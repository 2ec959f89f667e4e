"""Both object stores against the same contract; S3 through a real moto server."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from core.settings import Settings
from core.storage import (
    InvalidKey,
    LocalStore,
    NotFound,
    ObjectStore,
    S3Store,
    StoreError,
    check_key,
    open_store,
    store_from_url,
)
from tests.fixtures.servers import moto_endpoint, s3_bucket  # noqa: F401


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(bucket, "pre/fix", endpoint_url=endpoint)


def test_bytes_roundtrip_and_exists(store: ObjectStore) -> None:
    assert not store.exists("a/b.json")
    store.put_bytes("a/b.json", b"{}")
    assert store.exists("a/b.json")
    assert store.get_bytes("a/b.json") == b"{}"
    store.put_bytes("a/b.json", b"[1]")  # overwrite
    assert store.get_bytes("a/b.json") == b"[1]"


def test_stream_roundtrip_large(store: ObjectStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    n = store.put_stream("big/source", io.BytesIO(data))
    assert n == len(data)
    with store.get_stream("big/source") as f:
        parts = []
        while chunk := f.read(256 * 1024):
            parts.append(chunk)
    assert b"".join(parts) == data


def test_missing_keys_raise_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        store.get_bytes("nope")
    with pytest.raises(NotFound), store.get_stream("nope/either"):
        pass
    store.delete("nope")  # not an error


def test_list_prefix_start_after_and_dirs(store: ObjectStore) -> None:
    for k in ["jobs/a/x", "jobs/a/y/z", "jobs/b/x", "jobsx/q", "other"]:
        store.put_bytes(k, b"1")
    assert store.list("jobs/") == ["jobs/a/x", "jobs/a/y/z", "jobs/b/x"]
    assert store.list("jobs") == ["jobs/a/x", "jobs/a/y/z", "jobs/b/x", "jobsx/q"]
    assert store.list("jobs/", start_after="jobs/a/y/z") == ["jobs/b/x"]
    assert store.list("nothing/") == []
    assert store.list_dirs("jobs/") == ["a", "b"]
    assert store.delete_prefix("jobs/a/") == 2
    assert store.list("jobs/") == ["jobs/b/x"]


def test_put_if_absent_is_exclusive(store: ObjectStore) -> None:
    assert store.put_if_absent("lease/1", b"first")
    assert not store.put_if_absent("lease/1", b"second")
    assert store.get_bytes("lease/1") == b"first"
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def race(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent("race/key", str(i).encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "é"])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x")


@pytest.mark.parametrize("key", ["a/" + "9" * 251, "9" * 201, "a/" * 460 + "b", "x\n"])
def test_overlong_keys_are_invalid_not_store_errors(store: ObjectStore, key: str) -> None:
    """A name too long for a file system or S3 is the caller's fault (InvalidKey, a
    ValueError), never a StoreError: the API's circuit breaker opens only on those."""
    for call in (
        lambda: store.get_bytes(key),
        lambda: store.put_bytes(key, b"x"),
        lambda: store.exists(key),
    ):
        with pytest.raises(InvalidKey):
            call()


def test_name_errors_from_the_os_are_invalid_keys(tmp_path: Path) -> None:
    """Below the key check, the OS may still refuse a name (here ENOTDIR: a file used as
    a directory): that too is InvalidKey, not a StoreError."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes("a/file", b"x")
    with pytest.raises(InvalidKey):
        store.get_bytes("a/file/below")
    with pytest.raises(InvalidKey):
        store.put_bytes("a/file/below", b"x")


def test_ping(store: ObjectStore) -> None:
    store.ping()


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    class Boom(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:
            raise OSError("network dropped")

    store.put_bytes("k", b"old")
    with pytest.raises(OSError):
        store.put_stream("k", Boom())  # type: ignore[arg-type]
    assert store.get_bytes("k") == b"old"  # a failed write never tears the object
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_s3_unreachable_is_store_error(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    store = S3Store("no-such-bucket-here", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.raises(StoreError):
        store.ping()
    with pytest.raises(StoreError):
        store.put_bytes("k", b"x")


def test_store_from_url(tmp_path: Path) -> None:
    local = store_from_url((tmp_path / "s").as_uri())
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "s").resolve()
    s3 = store_from_url("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Store) and s3.bucket == "bucket" and s3.prefix == "some/prefix/"
    with pytest.raises(ValueError):
        store_from_url("ftp://x/y")
    with pytest.raises(ValueError):
        store_from_url("s3:///nobucket")
    default = open_store(Settings(data_dir=tmp_path / "d"))
    assert isinstance(default, LocalStore) and default.root == (tmp_path / "d" / "store").resolve()
