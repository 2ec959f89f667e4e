"""A corpus of bad uploads against a real uvicorn (docs/reliability.md, "Bad uploads"):
each gets a precise 4xx problem+json, no job, nothing in the store or temp dir, and the
API's RSS stays flat.

The corpus is built here with PyAV (no binaries in the repository).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import av
import httpx
import numpy as np
import psutil
import pytest

from tests.fixtures.media import grey_h264, make_video
from tests.fixtures.raw_http import read_reply, send_chunks_until_reply
from tests.fixtures.servers import Processes, free_port, service_cmd, wait_http

pytestmark = pytest.mark.e2e
LIMIT = 2 * 1024 * 1024
MAX_FRAMES = 50
MAX_PIXELS = 1920 * 1080


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        s.layout = "mono"
        t = np.sin(np.arange(8000) / 5).astype(np.float32)
        frame = av.AudioFrame.from_ndarray((t * 3e4).astype(np.int16)[None], "s16", "mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _no_frames(path: Path) -> Path:
    """A valid y4m stream header (64x48 video) and not one FRAME."""
    path.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    return path


def _one_pixel(path: Path) -> Path:
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 1, 1, "bgr0"
        for _ in range(4):
            f = av.VideoFrame.from_ndarray(np.zeros((1, 1, 3), np.uint8), format="rgb24")
            for p in s.encode(f.reformat(format="bgr0")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _y4m_huge(path: Path) -> Path:
    """A y4m header claiming 16384x16384, then one short FRAME."""
    path.write_bytes(b"YUV4MPEG2 W16384 H16384 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    return path


CORPUS: dict[str, tuple[Callable[[Path], Path], int, str, str]] = {
    # name: (builder, status, problem code, words in the detail)
    "empty": (lambda p: (p.write_bytes(b""), p)[1], 422, "empty-file", "empty"),
    "text": (
        lambda p: (p.write_text("just some notes\n" * 100), p)[1],
        422,
        "invalid-video",
        "text.bin: ",  # FFmpeg may take text for its `tty` demuxer: refused either way
    ),
    "random": (
        lambda p: (p.write_bytes(np.random.default_rng(5).bytes(65536)), p)[1],
        422,
        "invalid-video",
        "",
    ),
    "truncated-mp4": (
        lambda p: (
            p.write_bytes(grey_h264(p.with_suffix(".full.mp4"), 40, 320, 240).read_bytes()[:700]),
            p,
        )[1],
        422,
        "invalid-video",
        "",
    ),
    "audio-only": (_audio_only, 422, "invalid-video", "no video stream (streams: audio)"),
    "no-frames": (_no_frames, 422, "invalid-video", "zero decodable frames"),
    "one-pixel": (_one_pixel, 422, "video-too-small", "1x1 frames are smaller than 8x8"),
    # FFmpeg's own image-size check refuses this header before our max_pixels does;
    # pixel-bomb below is the one that reaches max_pixels.
    "y4m-16384": (_y4m_huge, 422, "invalid-video", "y4m-16384.bin: "),
    "frame-bomb": (
        lambda p: grey_h264(p, 400, 64, 48),
        422,
        "too-many-frames",
        f"exceed the limit of {MAX_FRAMES}",
    ),
    "pixel-bomb": (
        lambda p: grey_h264(p, 2, 4096, 2304, "matroska"),
        422,
        "invalid-video",
        f"exceeds the limit of {MAX_PIXELS} pixels",
    ),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, psutil.Process, Path]:
    tmp = tmp_path_factory.mktemp("bad-uploads")
    procs = Processes(tmp)
    port = free_port()
    env = {
        "UARNVC_DATA_DIR": str(tmp / "data"),
        "UARNVC_MAX_UPLOAD_BYTES": str(LIMIT),
        "UARNVC_MAX_FRAMES": str(MAX_FRAMES),
        "UARNVC_MAX_PIXELS": str(MAX_PIXELS),
        "UARNVC_RATE_LIMIT": "0",
    }
    proc = procs.start("api", service_cmd("api", "--port", str(port)), env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
        yield f"http://127.0.0.1:{port}", psutil.Process(proc.pid), tmp / "data"
    finally:
        procs.stop_all()


ACCEPTED: set[str] = set()  # ids of the valid uploads these tests made (then deleted)


def _nothing_left(base: str, data: Path) -> None:
    """No job and no stored object but those of the deliberately valid uploads."""
    assert {j["id"] for j in httpx.get(f"{base}/v1/jobs").json()["jobs"]} <= ACCEPTED
    store = data / "store"
    files = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    assert all(any(i in str(p) for i in ACCEPTED) for p in files), files
    tmp = data / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def _warm_up(base: str, tmp: Path) -> None:
    v = make_video(tmp / "warm.mkv")
    with open(v, "rb") as f:
        # The first job of a model also pays for its encode-time calibration.
        r = httpx.post(
            f"{base}/v1/jobs", files={"file": ("w.mkv", f)}, data={"params": "6000"}, timeout=120
        )
    assert r.status_code == 202, r.text
    ACCEPTED.add(r.json()["id"])
    assert httpx.delete(f"{base}/v1/jobs/{r.json()['id']}").status_code == 204


def test_bad_upload_corpus(api: tuple[str, psutil.Process, Path], tmp_path: Path) -> None:
    base, proc, data = api
    files = {name: build(tmp_path / f"{name}.bin") for name, (build, *_r) in CORPUS.items()}
    _warm_up(base, tmp_path)  # torch is imported by the first probe that plans a model
    rss0 = proc.memory_info().rss
    for round_ in range(3):  # repeated: memory must not creep
        for name, (_b, status, code, words) in CORPUS.items():
            with open(files[name], "rb") as f:
                r = httpx.post(
                    f"{base}/v1/jobs",
                    files={"file": (f"{name}.bin", f)},
                    data={"width": "48", "steps": "5", "params": "6000"},
                    timeout=60,
                )
            assert r.status_code == status, (name, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json"), name
            body = r.json()
            assert body["type"] == f"urn:uarnvc:problem:{code}", (name, body)
            assert words in body.get("detail", ""), (name, body)
            assert str(data) not in r.text  # server paths are never shown
        if round_ == 0:
            rss1 = proc.memory_info().rss
    rss2 = proc.memory_info().rss
    _nothing_left(base, data)
    print(
        f"\nbad uploads: API RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} -> "
        f"{rss2 / 2**20:.0f} MiB over 3 rounds of {len(CORPUS)}"
    )
    assert rss2 - rss1 < 30 * 2**20  # no creep from round to round
    assert rss2 - rss0 < 100 * 2**20


def test_over_limit_stops_reading_early(api: tuple[str, psutil.Process, Path]) -> None:
    """A chunked body with no Content-Length, far over the limit: the 413 arrives while
    the client is still sending, after about the limit (plus socket buffers), and the
    connection is closed; RSS does not grow by the body's size."""
    base, proc, data = api
    port = int(base.rsplit(":", 1)[1])
    rss0 = proc.memory_info().rss
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    sent, reply = send_chunks_until_reply(s, 200 * 1024 * 1024)
    reply = read_reply(s, reply)
    s.close()
    print(f"\nover-limit upload: server answered after {sent / 2**20:.1f} MiB sent (limit 2 MiB)")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply and b"upload-too-large" in reply
    assert sent < 24 * 2**20, sent  # the limit + socket buffers, not the 200 MiB body
    assert proc.memory_info().rss - rss0 < 20 * 2**20
    _nothing_left(base, data)


def test_declared_length_over_limit_refused_before_reading(
    api: tuple[str, psutil.Process, Path],
) -> None:
    base, _proc, data = api
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413") and b"upload-too-large" in reply
    _nothing_left(base, data)


def test_valid_small_video_still_accepted(
    api: tuple[str, psutil.Process, Path], tmp_path: Path
) -> None:
    """The limits refuse the corpus, not real videos (then the job is deleted)."""
    base, _proc, _data = api
    v = make_video(tmp_path / "ok.mkv")
    with open(v, "rb") as f:
        r = httpx.post(
            f"{base}/v1/jobs",
            files={"file": ("ok.mkv", f)},
            data={"width": "48", "params": "6000"},
            timeout=120,  # a new model: its encode-time calibration first
        )
    assert r.status_code == 202, r.text
    ACCEPTED.add(r.json()["id"])
    assert httpx.delete(f"{base}/v1/jobs/{r.json()['id']}").status_code == 204
