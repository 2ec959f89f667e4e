"""Finding 1: one key holder could make the API answer 503 to every tenant.

`GET /v1/jobs/{id}/clips/<251 nines>` on a job with clips made an object name too long
for the store; the store error opened the store circuit breaker, so every tenant got 503
for 5 s. Before the fix this test failed: the probe request got 503 and so did bob's
next request.
"""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import ALICE, BOB, Api, assert_problem, new_job, other_tenant_polls

BAD_CLIPS = ["9" * 251, "9" * 5000, "3", "4096", str(2**63), "-1", "1e3", "0x1", "%0a"]


def test_long_clip_number_is_404_and_nobody_gets_503(
    keyed: Api, video: Path, done_job: str
) -> None:
    with keyed.client(ALICE) as alice, keyed.client(BOB) as bob:
        job = done_job  # 12 frames, clip_length 4: clips 0..2, all done
        theirs = new_job(bob, video)
        with other_tenant_polls(keyed, BOB, theirs) as codes:
            for k in BAD_CLIPS * 3:
                r = alice.get(f"/v1/jobs/{job}/clips/{k}")
                assert r.status_code in (404, 422), (k, r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("application/problem+json")
                assert bob.get(f"/v1/jobs/{theirs}").status_code == 200
        assert codes and set(codes) == {200}, codes
        assert alice.get(f"/v1/jobs/{job}/clips/2").status_code == 200
        pending = new_job(alice, video)  # a planned clip not done yet: a plain 404
        assert_problem(alice.get(f"/v1/jobs/{pending}/clips/2"), 404, "clip-not-found")
        assert keyed.client().get("/readyz").status_code in (200, 503)  # broker may be absent
        assert "store: unavailable" not in keyed.client().get("/readyz").text
        assert "object store unavailable" not in keyed.log()
