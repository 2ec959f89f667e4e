"""`uarnvc serve|api|worker` wiring: flags, the loopback rule, entry points."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from core.settings import Settings
from tests.fixtures.servers import REPO
from worker.cli import main, safe_host


def test_no_keys_means_loopback_only(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert safe_host("0.0.0.0", Settings()) == "127.0.0.1"
    assert "no API keys configured" in caplog.text and "127.0.0.1 only" in caplog.text
    assert safe_host("0.0.0.0", Settings(api_keys=["k"])) == "0.0.0.0"
    assert safe_host("127.0.0.1", Settings()) == "127.0.0.1"


def test_entry_points_are_registered() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="uarnvc.commands")}
    assert eps == {
        "serve": "worker.cli:register_serve",
        "api": "worker.cli:register_api",
        "worker": "worker.cli:register_worker",
        "submit": "api.client_cli:register_submit",
        "status": "api.client_cli:register_status",
        "fetch": "api.client_cli:register_fetch",
        "demo": "api.demo:register_demo",
    }


def test_help_lists_the_commands() -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "serve", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--data-dir" in out and "--port" in out


@pytest.mark.skipif(
    importlib.util.find_spec("core.cli") is None, reason="core/cli.py not there yet"
)
def test_uarnvc_console_script_has_service_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "core.cli", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    for cmd in ("serve", "api", "worker"):
        assert cmd in out
