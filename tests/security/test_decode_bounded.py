"""`/decode` rendered the whole video inside the API process with no bound: any number of
decodes per key ran at once, each on every core. Before the fix this test failed: the
third concurrent decode of one key was served.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.security.conftest import ALICE, BOB, Api, Servers, assert_problem, new_job


def _hold(api: Api, key: str, job: str) -> socket.socket:
    """A decode request left open (the job has no worker: the stream waits for clips)."""
    s = socket.create_connection(("127.0.0.1", api.port), timeout=20)
    s.sendall(
        f"GET /v1/jobs/{job}/decode?format=mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def test_concurrent_decodes_are_bounded_per_key_and_process(servers: Servers, video: Path) -> None:
    api = servers.get(api_keys=f"{ALICE},{BOB}", max_decodes_per_key="2", max_decodes="3")
    with api.client(ALICE) as alice, api.client(BOB) as bob:
        a, b = new_job(alice, video), new_job(bob, video)
        held = [_hold(api, ALICE, a), _hold(api, ALICE, a)]
        try:
            r = alice.get(f"/v1/jobs/{a}/decode")
            body = assert_problem(r, 429, "too-many-decodes")
            assert int(r.headers["retry-after"]) >= 1 and "2 decodes" in body["detail"]
            held.append(_hold(api, BOB, b))  # bob has slots of his own...
            r = bob.get(f"/v1/jobs/{b}/decode")  # ...but the process is full
            body = assert_problem(r, 429, "too-many-decodes")
            assert "3 decodes" in body["detail"]
            assert bob.get(f"/v1/jobs/{b}").status_code == 200  # status is not bounded
        finally:
            for s in held:
                s.close()
