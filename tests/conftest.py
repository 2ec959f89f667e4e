"""Suite-wide settings.

Lag-based load shedding (api/shed.py) is off in the suite: its tests drive the
middleware directly (tests/api/test_shed.py), while every other test's API runs on a CI
machine whose cores other processes share, where a late event-loop timer says more
about the neighbours than about the API, and a shed 503 would fail a test that checks
something else. The in-flight limit stays on. Inherited by the service processes that
the end-to-end tests start.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("UARNVC_SHED_MAX_LAG", "0")
