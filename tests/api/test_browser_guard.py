"""Host names and origins, in process (the end-to-end probe is in tests/security)."""

from __future__ import annotations

import pytest

from api.browser_guard import allowed_hosts, host_name
from tests.api.conftest import AppFactory
from tests.api.test_errors import assert_problem


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8000", "localhost"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("attacker.example:8000", "attacker.example"),
        ("", ""),
    ],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


def test_allowed_hosts_defaults() -> None:
    assert allowed_hosts([], keyed=False) == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts([], keyed=True) is None
    assert allowed_hosts(["*"], keyed=False) is None
    assert allowed_hosts(["API.example:443", "[::1]"], keyed=True) == {"api.example", "::1"}


def test_host_and_origin_refusals_are_problems(make_client: AppFactory) -> None:
    c = make_client()
    assert_problem(c.get("/v1/jobs", headers={"Host": "evil.example"}), 400, "host-not-allowed")
    r = c.post("/v1/jobs", headers={"Origin": "https://evil.example"})
    assert_problem(r, 403, "cross-site-request")
    assert c.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200
    opened = make_client(allowed_hosts=["*"])
    assert opened.get("/v1/jobs", headers={"Host": "evil.example"}).status_code == 200
