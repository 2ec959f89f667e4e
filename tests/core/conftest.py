"""A local object store in a temp folder, for the job-record and status tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.storage import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path)
