"""Finding 8: the upload size limit counted only the `file` part.

A chunked multipart upload with an extra 64 MiB part was accepted under a 1 MiB limit.
Before the fix this test failed: the server read all 64 MiB and answered 202.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from tests.fixtures.raw_http import chunk, read_reply, send_chunks_until_reply
from tests.security.conftest import ALICE, BOB, Servers, new_job, other_tenant_polls

LIMIT = 1024 * 1024
BOUNDARY = b"probe-boundary-7d3f"


def test_extra_parts_count_against_the_limit(servers: Servers, video: Path) -> None:
    api = servers.get(api_keys=f"{ALICE},{BOB}", max_upload_bytes=str(LIMIT))
    with api.client(BOB) as bob:
        theirs = new_job(bob, video)
    with api.client(ALICE) as alice:
        before = len(alice.get("/v1/jobs").json()["jobs"])
    with other_tenant_polls(api, BOB, theirs) as codes:
        s = socket.create_connection(("127.0.0.1", api.port))
        s.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer alice\r\n"
            b"Content-Type: multipart/form-data; boundary=" + BOUNDARY + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        head = (
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="v.mkv"\r\nContent-Type: video/x-matroska\r\n\r\n'
            + video.read_bytes()
            + b"\r\n--"
            + BOUNDARY
            + b'\r\nContent-Disposition: form-data; name="junk"; filename="junk.bin"\r\n\r\n'
        )
        s.sendall(chunk(head))
        total = 64 * 1024 * 1024
        sent, reply = send_chunks_until_reply(s, total)
        if not reply and sent >= total:  # not stopped: finish the body to get the answer
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(chunk(b"\r\n--" + BOUNDARY + b"--\r\n") + b"0\r\n\r\n")
        reply = read_reply(s, reply)
        s.close()
    print(f"\nextra 64 MiB part: answered after {sent / 2**20:.1f} MiB (limit 1 MiB)")
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"upload-too-large" in reply or b"problem+json" in reply
    assert sent < 16 * 2**20, sent  # stopped near the limit, not after 64 MiB
    assert set(codes) == {200}
    with api.client(ALICE) as alice:
        assert len(alice.get("/v1/jobs").json()["jobs"]) == before
    tmp = api.data / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
