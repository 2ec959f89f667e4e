"""Chunks, bitstream, decoded video and events of a job the real codec encoded (in-process)."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.codec.bitstream import BitstreamError, read_stream
from core.codec.chain import decode_clip
from core.video import read_frames
from tests.api.conftest import post_video, run_inline


def decode_uarv(data: bytes) -> np.ndarray:
    header, chunks = read_stream(io.BytesIO(data))
    out, state = [], None
    for chunk in chunks:
        frames, state = decode_clip(header, chunk, state)
        out.append(frames)
    return np.concatenate(out)


@pytest.fixture(scope="module")
def done_job(tmp_path_factory: pytest.TempPathFactory, small_video: Path):
    from api.app import create_app
    from core.settings import Settings

    s = Settings(data_dir=tmp_path_factory.mktemp("streams"), poll_interval=0.05)
    with TestClient(create_app(s), base_url="http://127.0.0.1") as client:
        job = post_video(client, small_video).json()["id"]
        run_inline(client, job)
        yield client, job


def test_status_after_encoding(done_job) -> None:
    client, job = done_job
    st = client.get(f"/v1/jobs/{job}").json()
    assert st["status"] == "succeeded" and st["clips_done"] == st["clips_total"] == 3
    assert st["progress"] == 100
    for c in st["clips"]:
        assert c["status"] == "done" and c["bytes"] > 0 and c["psnr"] > 10 and c["bpp"] > 0
    assert st["psnr"] > 10 and st["bpp"] > 0


def test_clip_chunks_and_bitstream(done_job) -> None:
    client, job = done_job
    chunks = []
    for k in range(3):
        r = client.get(f"/v1/jobs/{job}/clips/{k}")
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        chunks.append(r.content)
    assert client.get(f"/v1/jobs/{job}/clips/3").status_code == 404
    bs = client.get(f"/v1/jobs/{job}/bitstream")
    assert bs.status_code == 200
    header, it = read_stream(io.BytesIO(bs.content))
    assert list(it) == chunks
    assert (header.width, header.frames) == (48, 12)
    frames = decode_uarv(bs.content)
    assert frames.shape == (12, header.height, 48, 3)


def test_decode_mkv_is_the_exact_frames(done_job, tmp_path: Path) -> None:
    client, job = done_job
    expected = decode_uarv(client.get(f"/v1/jobs/{job}/bitstream").content)
    r = client.get(f"/v1/jobs/{job}/decode?format=mkv")
    assert r.status_code == 200 and r.headers["content-type"] == "video/x-matroska"
    (tmp_path / "o.mkv").write_bytes(r.content)
    got = read_frames(tmp_path / "o.mkv")
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("fmt", ["y4m", "mp4"])
def test_decode_other_formats(done_job, tmp_path: Path, fmt: str) -> None:
    client, job = done_job
    r = client.get(f"/v1/jobs/{job}/decode?format={fmt}")
    assert r.status_code == 200
    (tmp_path / f"o.{fmt}").write_bytes(r.content)
    assert read_frames(tmp_path / f"o.{fmt}").shape[0] == 12
    if fmt == "mp4":  # fragmented: moov first, then moof/mdat pairs
        assert r.content[4:8] == b"ftyp" and b"moof" in r.content and b"mvex" in r.content
    assert client.get(f"/v1/jobs/{job}/decode?format=avi").status_code == 422


def _sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name = data = None
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if name and data:
            events.append((name, json.loads(data)))
    return events


def test_events_of_a_finished_job(done_job) -> None:
    client, job = done_job
    r = client.get(f"/v1/jobs/{job}/events")
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _sse(r.text)
    assert [e[0] for e in events] == ["clip_done"] * 3 + ["job_done"]
    assert [e[1]["index"] for e in events[:3]] == [0, 1, 2]
    assert events[-1][1]["status"] == "succeeded"
    r = client.get(f"/v1/jobs/{job}/events", headers={"Last-Event-ID": "1"})
    assert [e[0] for e in _sse(r.text)] == ["clip_done", "job_done"]


def test_bitstream_is_held_open_while_running(client: TestClient, small_video: Path) -> None:
    """The download starts before any clip exists and ends with the last one."""
    job = post_video(client, small_video).json()["id"]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            time.sleep(0.5)
            run_inline(client, job)
        except BaseException as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    received: list[tuple[float, int]] = []
    with client.stream("GET", f"/v1/jobs/{job}/bitstream") as r:
        for part in r.iter_bytes():
            received.append((time.monotonic(), len(part)))
    t.join()
    assert not errors
    data_len = sum(n for _, n in received)
    assert client.get(f"/v1/jobs/{job}").json()["status"] == "succeeded"
    assert data_len == len(client.get(f"/v1/jobs/{job}/bitstream").content)
    assert len(received) >= 2  # arrived in pieces, as clips finished


def test_streams_end_when_job_fails(client: TestClient, small_video: Path) -> None:
    from core.jobs import mark_failed

    job = post_video(client, small_video).json()["id"]
    run_inline(client, job, steps=2)  # split + clip 0
    mark_failed(client.app.state.store, job, "encode_failed", "clip 1: simulated")
    bs = client.get(f"/v1/jobs/{job}/bitstream").content
    _header, chunks = read_stream(io.BytesIO(bs))
    assert next(chunks)  # clip 0, then the stream stops: the reader says where
    with pytest.raises(BitstreamError, match="clip 1"):
        next(chunks)
    events = _sse(client.get(f"/v1/jobs/{job}/events").text)
    assert events[-1][0] == "job_failed" and events[-1][1]["error"]["code"] == "encode_failed"
    st = client.get(f"/v1/jobs/{job}").json()
    assert st["status"] == "failed" and st["clips_done"] == 1
