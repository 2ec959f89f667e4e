"""`uarnvc serve` stopped with SIGTERM takes its worker down with it (no orphans)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.fixtures.servers import free_port, wait_http

pytestmark = pytest.mark.e2e


def test_sigterm_stops_the_embedded_worker(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "worker.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[psutil.Process] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "serve should run a worker process"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, f"orphaned after SIGTERM: {[p.pid for p in alive]}"
    finally:
        proc.kill()
        for p in children:  # an orphan is no longer our child: kill it by pid
            if p.is_running():
                p.kill()
