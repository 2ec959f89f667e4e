"""`uarnvc demo` as a new user sees it: the console shows the URL, a bar per clip and the
results; uvicorn's and Celery's logs go to the file it names, none to the console."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.servers import REPO, free_port

pytestmark = pytest.mark.e2e
# What a log line of ours (core/logs.py), uvicorn or Celery looks like.
LOG_LINE = re.compile(
    r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|^\[\d{4}-|^\d{4}-\d\d-\d\d |celery@|Uvicorn|"
    r"uvicorn|Traceback|-------------- "
)


@pytest.mark.timeout(300)
def test_demo_console_has_no_log_lines(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    cmd = [sys.executable, "-m", "core.cli", "demo", "--port", str(free_port())]
    cmd += ["--data-dir", str(data), "--frames", "8", "--clip-length", "4", "--width", "48"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout.splitlines()
    bars = [ln for part in run.stderr.split("\r") for ln in part.splitlines() if ln.strip()]
    assert [ln for ln in out if LOG_LINE.search(ln)] == [], run.stdout
    assert [ln for ln in bars if LOG_LINE.search(ln)] == [], run.stderr[-3000:]
    log_file = data / "logs" / "serve.log"
    assert out[0].startswith("service up at http://127.0.0.1:") and "encoding" in out[0]
    assert out[1] == f"server logs: {log_file} (--verbose to see them here)"
    assert re.fullmatch(r"job [0-9a-f]{32}: 2 clips; watch it at http://127\.0\.0\.1:\d+/", out[2])
    assert re.search(r"succeeded  2/2 clips  100%  [\d.]+ dB  [\d.]+ bpp", out[3]), out
    assert "decoded locally" in out[4] and len(out) == 5, out
    # A bar per clip, each ending with its PSNR and bpp.
    finals = {ln.split(":")[0] for ln in bars if re.search(r"100%.*dB [\d.]+ bpp", ln)}
    assert finals == {"clip 1/2", "clip 2/2"}, bars[-6:]
    # The server's own lines are all in the file.
    logged = log_file.read_text()
    assert "Application startup complete" in logged and "celery.apps.worker" in logged, logged[
        -2000:
    ]
