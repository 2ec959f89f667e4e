"""End-to-end fixtures: real servers (redis-server, moto S3), real uvicorn and Celery
worker processes. Process logs are printed when a test fails."""

from __future__ import annotations

import pytest

from tests.fixtures.servers import (  # noqa: F401
    moto_endpoint,
    pens,
    processes,
    redis_url,
    s3_bucket,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
