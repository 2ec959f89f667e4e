"""A bounded atheris run of tests/fuzz/fuzz_uarv.py (slow: `make soak`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
TARGET = Path(__file__).with_name("fuzz_uarv.py")
RUNS = 3000


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_atheris_bounded_run(tmp_path: Path) -> None:
    """libFuzzer exits non-zero and writes crash-* on any finding (an exception other
    than BitstreamError, a hang over -timeout, RSS over -rss_limit_mb)."""
    proc = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={RUNS}", f"-artifact_prefix={tmp_path}/"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
    done = re.search(r"Done (\d+) runs in (\d+) second", out)
    assert done and int(done.group(1)) >= RUNS, out[-2000:]
    print(f"\natheris: {done.group(1)} inputs in {done.group(2)} s")
