"""Finding 7: the rate limit could be bypassed when keyless.

Any Bearer value got its own token bucket even with auth off: 6 random tokens gave 6
times 200 where one client got 429 on its fourth request. Before the fix this test
failed: every made-up token was served.
"""

from __future__ import annotations

import uuid

from tests.security.conftest import ALICE, BOB, Servers, assert_problem


def test_made_up_tokens_share_the_address_bucket(servers: Servers) -> None:
    api = servers.get(rate_limit="0.2", rate_burst="3")
    with api.client() as c:
        assert [c.get("/v1/jobs").status_code for _ in range(3)] == [200] * 3
        assert_problem(c.get("/v1/jobs"), 429, "rate-limited")
        for _ in range(6):
            r = c.get("/v1/jobs", headers={"Authorization": f"Bearer {uuid.uuid4().hex}"})
            assert_problem(r, 429, "rate-limited")
            assert int(r.headers["retry-after"]) >= 1


def test_invalid_keys_share_the_address_bucket_when_keyed(servers: Servers) -> None:
    """With keys, a valid key has its own bucket; made-up keys (401 anyway) are counted
    against the caller's address, so spraying them neither bypasses the limit nor grows
    the bucket table."""
    api = servers.get(api_keys=f"{ALICE},{BOB}", rate_limit="0.2", rate_burst="3")
    with api.client() as c:
        codes = [
            c.get("/v1/jobs", headers={"Authorization": f"Bearer {uuid.uuid4().hex}"}).status_code
            for _ in range(6)
        ]
        assert codes == [401] * 3 + [429] * 3, codes
    with api.client(ALICE) as alice, api.client(BOB) as bob:
        assert [alice.get("/v1/jobs").status_code for _ in range(4)] == [200] * 3 + [429]
        assert bob.get("/v1/jobs").status_code == 200  # another tenant is not affected
