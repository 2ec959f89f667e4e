"""API contract fuzzing (docs/reliability.md, "The API contract"): schemathesis
generates requests from the live OpenAPI schema of a real uvicorn; no response may be a
5xx, and every response must match the schema (status codes, content types, bodies)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.servers import Processes, free_port, service_cmd, wait_http

pytestmark = pytest.mark.e2e
KEY = "contract-key"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("contract")
    procs = Processes(tmp)
    port = free_port()
    env = {
        "UARNVC_DATA_DIR": str(tmp / "data"),
        "UARNVC_API_KEYS": KEY,
        "UARNVC_RATE_LIMIT": "0",
        "UARNVC_POLL_INTERVAL": "0.05",
        "UARNVC_MAX_UPLOAD_BYTES": "1000000",
    }
    proc = procs.start("api", service_cmd("api", "--port", str(port)), env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 90, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop_all()
        print(procs.log("api")[-3000:] if procs.log("api").count("Traceback") else "")


def run_schemathesis(base_url: str, examples: int, tmp: Path) -> str:
    """The schemathesis CLI (its pytest plugin does not load under pytest 9): every
    phase and check (but one), all operations, deterministic data; its summary."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        # A schema-valid upload (any bytes as `file`) is rightly refused when the bytes
        # are not a video (422 invalid-video): content, not the contract.
        "--exclude-checks",
        "positive_data_acceptance",
        "-H",
        f"Authorization: Bearer {KEY}",
        "--max-examples",
        str(examples),
        "--request-timeout",
        "10",
        "--generation-deterministic",
        "--no-color",
    ]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    return out


@pytest.mark.timeout(600)
def test_api_contract(base_url: str, tmp_path: Path) -> None:
    out = run_schemathesis(base_url, 15, tmp_path)
    print("\n" + "\n".join(out.splitlines()[-15:]))


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_api_contract_soak(base_url: str, tmp_path: Path) -> None:
    out = run_schemathesis(base_url, 300, tmp_path)
    print("\n" + "\n".join(out.splitlines()[-15:]))
