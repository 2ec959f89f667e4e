"""A real tus client (tuspy) against two real API processes sharing one store: the
connection is cut mid-upload, the upload resumes on the other process, and the job keeps
exactly the bytes sent. Then the protocol's errors as a client meets them."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from core.jobs import Keys
from core.storage import LocalStore
from tests.fixtures.media import TINY, make_video
from tests.fixtures.servers import Processes, free_port, uarnvc_cmd, wait_http

pytestmark = pytest.mark.e2e
KEY = "tus-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


class CuttingProxy:
    """TCP proxy to `port` that closes both sides once `cut_after` bytes of the request
    have gone through: a connection lost mid-upload."""

    def __init__(self, port: int, cut_after: int) -> None:
        self.target, self.cut_after = port, cut_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, down: socket.socket) -> None:
        up = socket.create_connection(("127.0.0.1", self.target))
        sent = 0

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := up.recv(65536):
                    down.sendall(data)

        threading.Thread(target=back, daemon=True).start()
        try:
            while data := down.recv(4096):
                if sent + len(data) > self.cut_after:
                    up.sendall(data[: self.cut_after - sent])
                    self.cuts += 1
                    break
                up.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (up, down):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """Two `uarnvc api` processes on one data dir (store and broker): two replicas."""
    d = tmp_path_factory.mktemp("tus")
    procs = Processes(d)
    env = {
        "UARNVC_DATA_DIR": str(d / "data"),
        "UARNVC_API_KEYS": KEY,
        "UARNVC_MAX_UPLOAD_BYTES": "3000000",
    }
    ports = [free_port(), free_port()]
    try:
        for i, port in enumerate(ports):
            p = procs.start(f"api{i}", uarnvc_cmd("api", "--port", str(port)), env)
            wait_http(f"http://127.0.0.1:{port}/healthz", 90, p)
        yield f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}", d / "data"
    except BaseException:
        print(procs.dump())
        raise
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~0.9 MB of FFV1: big enough that a cut lands mid-body.
    return make_video(tmp_path_factory.mktemp("media") / "v.mkv", frames=24, width=320, height=240)


def test_cut_upload_resumes_on_another_process(apis: tuple[str, str, Path], video: Path) -> None:
    a, b, data_dir = apis
    data = video.read_bytes()
    proxy = CuttingProxy(int(a.rsplit(":", 1)[1]), cut_after=len(data) // 2)
    try:
        first = tus_client.TusClient(f"http://127.0.0.1:{proxy.port}/v1/uploads", headers=AUTH)
        uploader = first.uploader(str(video), chunk_size=len(data), metadata={"filename": "v.mkv"})
        with pytest.raises((TusUploadFailed, TusCommunicationError)):
            uploader.upload()  # one PATCH of the whole file, cut half-way
        assert proxy.cuts >= 1
    finally:
        proxy.close()
    uid = uploader.url.rsplit("/", 1)[1]

    second = tus_client.TusClient(f"{b}/v1/uploads", headers=AUTH)
    resumed = second.uploader(str(video), url=f"{b}/v1/uploads/{uid}", chunk_size=256 * 1024)
    # What process A stored before the cut is the offset process B resumes from.
    assert 0 < resumed.offset < len(data)
    resumed.upload()
    head = httpx.head(f"{b}/v1/uploads/{uid}", headers={**AUTH, "Tus-Resumable": "1.0.0"})
    assert head.headers["upload-offset"] == str(len(data))

    r = httpx.post(f"{a}/v1/jobs", json={"upload_id": uid, **TINY}, headers=AUTH)
    assert r.status_code == 202, r.text
    store = LocalStore(data_dir / "store")
    assert store.get_bytes(Keys(r.json()["id"]).source) == data  # byte for byte


def test_errors_over_the_wire(apis: tuple[str, str, Path], tmp_path: Path) -> None:
    a, _b, _ = apis
    tus = {**AUTH, "Tus-Resumable": "1.0.0"}
    patch = {**tus, "Content-Type": "application/offset+octet-stream"}

    def problem(r: httpx.Response, status: int) -> bool:
        return r.status_code == status and r.headers["content-type"] == "application/problem+json"

    assert problem(httpx.head(f"{a}/v1/uploads/{'f' * 32}", headers=tus), 404)
    unknown = httpx.patch(
        f"{a}/v1/uploads/{'f' * 32}", headers={**patch, "Upload-Offset": "0"}, content=b"x"
    )
    assert problem(unknown, 404) and unknown.json()["type"].endswith("upload-not-found")
    big = httpx.post(f"{a}/v1/uploads", headers={**tus, "Upload-Length": "3000001"})
    assert problem(big, 413)

    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3 not really matroska" * 50)
    up = tus_client.TusClient(f"{a}/v1/uploads", headers=AUTH).uploader(str(junk))
    up.upload()
    uid = up.url.rsplit("/", 1)[1]
    wrong = httpx.patch(
        f"{a}/v1/uploads/{uid}", headers={**patch, "Upload-Offset": "0"}, content=b"x"
    )
    assert problem(wrong, 409)
    r = httpx.post(f"{a}/v1/jobs", json={"upload_id": uid, **TINY}, headers=AUTH)
    assert problem(r, 422) and r.json()["type"].endswith("invalid-video")
