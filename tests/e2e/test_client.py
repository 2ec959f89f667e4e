"""The Python client and `uarnvc submit|status|fetch` against a real `uarnvc serve` with
an API key and JSON logs on."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.client import ApiError, ClientSettings, Event, UarnvcClient
from core.codec.bitstream import read_stream
from core.video import read_frames
from tests.fixtures.media import TINY, make_video
from tests.fixtures.servers import Processes, free_port, uarnvc_cmd, wait_http

pytestmark = pytest.mark.e2e
KEY = "client-test-key"
OPTS = {k: int(v) for k, v in TINY.items()}  # 12 frames, clips of 4: three clips


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Processes]]:
    d = tmp_path_factory.mktemp("client")
    procs = Processes(d)
    port = free_port()
    proc = procs.start(
        "serve",
        uarnvc_cmd("serve", "--port", str(port), "--data-dir", str(d / "data"), "--verbose"),
        env={
            "UARNVC_API_KEYS": KEY,
            "UARNVC_LOG_JSON": "1",
            "UARNVC_POLL_INTERVAL": "0.2",
            "UARNVC_TORCH_THREADS": "1",
        },
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
        yield f"http://127.0.0.1:{port}", procs
    except BaseException:
        print(procs.dump())
        raise
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "small.mkv")


@pytest.fixture(scope="module")
def server(service: tuple[str, Processes]) -> str:
    return service[0]


def cli(server: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    """`uarnvc ...` in a fresh process, configured through the environment only."""
    import os

    env = {**os.environ, "UARNVC_SERVER": server, "UARNVC_API_KEY": key}
    return subprocess.run(
        uarnvc_cmd(*args), env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_client_submit_events_fetch(server: str, small_video: Path, tmp_path: Path) -> None:
    events: list[Event] = []
    uploaded: list[tuple[int, int]] = []
    with UarnvcClient(server, api_key=KEY) as c:
        job = c.submit(small_video, OPTS, on_upload=lambda n, t: uploaded.append((n, t)))
        assert job.status in ("queued", "running") and job.clips_total == 3
        assert uploaded and uploaded[-1][0] == uploaded[-1][1] == small_video.stat().st_size
        final = c.wait(job.id, on_event=events.append, timeout=180)
        assert final.status == "succeeded" and final.clips_done == 3

        done = [e for e in events if e.event == "clip_done"]
        assert [e.data["index"] for e in done] == [0, 1, 2]
        assert [e.id for e in done] == ["0", "1", "2"]
        assert all(e.data["psnr"] > 0 and e.data["bytes"] > 0 for e in done)
        assert events[-1].event == "job_done"
        for e in events:
            if e.event == "clip_progress":
                assert 0 <= e.data["progress"] <= 1

        n = c.fetch_bitstream(job.id, tmp_path / "out.uarv")
        raw = (tmp_path / "out.uarv").read_bytes()
        assert (
            n == len(raw)
            and raw
            == httpx.get(
                f"{server}/v1/jobs/{job.id}/bitstream", headers={"Authorization": f"Bearer {KEY}"}
            ).content
        )
        _header, it = read_stream(io.BytesIO(raw))
        chunks = list(it)
        assert len(chunks) == 3
        assert c.fetch_clip(job.id, 0) == chunks[0]
        c.fetch_decoded(job.id, tmp_path / "out.mkv")
        assert read_frames(tmp_path / "out.mkv").shape[0] == 12
        assert any(j["id"] == job.id for j in c.jobs())


def test_client_errors_are_typed(server: str, small_video: Path) -> None:
    with UarnvcClient(server, api_key="wrong") as c, pytest.raises(ApiError) as e:
        c.status("0" * 32)
    assert e.value.status == 401 and e.value.code == "unauthorized"
    with UarnvcClient(server, api_key=KEY) as c:
        with pytest.raises(ApiError) as e:
            c.status("0" * 32)
        assert e.value.status == 404 and "no job" in str(e.value)
        with pytest.raises(ApiError) as e:
            c.submit(small_video, {"steps": 0})
        assert e.value.status == 422 and "steps" in str(e.value)
        assert e.value.problem["errors"][0]["field"] == "steps"
    with UarnvcClient("http://127.0.0.1:9", api_key=KEY) as c, pytest.raises(httpx.ConnectError):
        c.status("0" * 32)


def test_client_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UARNVC_SERVER", "http://example.invalid:8123/")
    monkeypatch.setenv("UARNVC_API_KEY", "k1")
    s = ClientSettings()
    assert s.server == "http://example.invalid:8123/" and s.api_key.get_secret_value() == "k1"
    assert "k1" not in repr(s)  # the key never lands in a log or a traceback
    with UarnvcClient() as c:
        assert c.server == "http://example.invalid:8123"
        assert c._http.headers["Authorization"] == "Bearer k1"


def test_cli_submit_wait_status_fetch(
    service: tuple[str, Processes], small_video: Path, tmp_path: Path
) -> None:
    server, procs = service
    out = tmp_path / "cli.uarv"
    r = cli(
        server,
        "submit",
        str(small_video),
        "--clip-length",
        "4",
        "--frames",
        "8",
        "--width",
        "48",
        "--steps",
        "5",
        "--params",
        "6000",
        "--wait",
        "-o",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    job = r.stdout.split()[1]
    assert "succeeded" in r.stdout and "clip 2/2" in r.stderr  # the bars go to stderr
    header, it = read_stream(io.BytesIO(out.read_bytes()))
    chunks = list(it)
    assert header.frames == 8 and len(chunks) == 2

    r = cli(server, "status", job)
    assert r.returncode == 0 and "succeeded" in r.stdout and "clip    1  done" in r.stdout
    r = cli(server, "status", job, "--json")
    assert json.loads(r.stdout)["clips_done"] == 2
    r = cli(server, "status")
    assert job in r.stdout
    r = cli(server, "fetch", job, "-o", str(tmp_path / "cli.mkv"))
    assert r.returncode == 0, r.stderr
    assert read_frames(tmp_path / "cli.mkv").shape[0] == 8

    # Errors: one readable line and exit status 1 (server refused) or 2 (usage).
    r = cli(server, "status", job, key="nope")
    assert r.returncode == 1 and "401" in r.stderr and "Traceback" not in r.stderr
    r = cli(server, "submit", str(small_video), "--steps", "0")
    assert r.returncode == 1 and "422" in r.stderr and "steps" in r.stderr
    r = cli(server, "submit", str(small_video), "--device", "cuda")
    assert r.returncode == 2
    r = cli(server, "fetch", job, "-o", str(tmp_path / "x.txt"))
    assert r.returncode == 2

    # The service logged JSON lines; the worker's clip lines name their job and clip.
    records = []
    for line in procs.log("serve").splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    clip_lines = [x for x in records if x.get("job_id") == job and "clip" in x]
    assert clip_lines, procs.log("serve")[-3000:]
    assert {x["clip"] for x in clip_lines} >= {0, 1}
    assert any(x.get("job_id") == job and x["logger"].startswith("api") for x in records)
