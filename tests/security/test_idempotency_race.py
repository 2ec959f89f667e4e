"""Finding 2: the Idempotency-Key check had a race.

Identical POSTs with the same `Idempotency-Key` sent at once each created a job (3 of 3
trials in the probe): a claim whose `job.json` was not written yet was taken for stale
and overwritten. Before the fix this test failed in its first trial (2 to 5 jobs).
Must show: 20 trials of 5 concurrent identical POSTs create exactly one job each.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx

from tests.security.conftest import ALICE, BOB, TINY, Api, new_job

TRIALS, AT_ONCE = 20, 5


def _post(api: Api, video: Path, key: str, out: list, barrier: threading.Barrier) -> None:
    data = video.read_bytes()
    with api.client(ALICE) as c:
        barrier.wait()
        r = c.post(
            "/v1/jobs",
            files={"file": (video.name, data, "video/x-matroska")},
            data=TINY,
            headers={"Idempotency-Key": key},
        )
        out.append(r)


def test_concurrent_identical_posts_create_one_job(keyed: Api, video: Path) -> None:
    with keyed.client(BOB) as bob:
        theirs = new_job(bob, video)
    with keyed.client(ALICE) as alice:
        before = len(alice.get("/v1/jobs?limit=100").json()["jobs"])
    created = []
    for trial in range(TRIALS):
        key = f"trial-{trial}-{uuid.uuid4().hex}"
        out: list[httpx.Response] = []
        barrier = threading.Barrier(AT_ONCE)
        threads = [
            threading.Thread(target=_post, args=(keyed, video, key, out, barrier))
            for _ in range(AT_ONCE)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(out) == AT_ONCE
        codes = sorted(r.status_code for r in out)
        # One creates; the others replay it (202, Idempotent-Replayed) or, if the
        # creator is still storing, are told to retry (409): never a second job.
        assert all(c in (202, 409) for c in codes), [(r.status_code, r.text) for r in out]
        ids = {r.json()["id"] for r in out if r.status_code == 202}
        assert len(ids) == 1, (trial, codes, ids)
        fresh = [r for r in out if r.status_code == 202 and "idempotent-replayed" not in r.headers]
        assert len(fresh) == 1, (trial, [dict(r.headers) for r in out])
        for r in out:
            if r.status_code == 409:
                assert r.headers["content-type"].startswith("application/problem+json")
                assert int(r.headers["retry-after"]) >= 1
        created.extend(ids)
    with keyed.client(ALICE) as alice:
        jobs = [j["id"] for j in alice.get("/v1/jobs?limit=100").json()["jobs"]]
        assert len(jobs) == before + TRIALS and set(created) <= set(jobs)
        # A later retry of any of them replays the same job.
        r = alice.post(
            "/v1/jobs",
            files={"file": (video.name, video.read_bytes(), "video/x-matroska")},
            data=TINY,
            headers={"Idempotency-Key": key},
        )
        assert r.status_code == 202 and r.headers["idempotent-replayed"] == "true"
        assert r.json()["id"] == created[-1]
    with keyed.client(BOB) as bob:
        assert bob.get(f"/v1/jobs/{theirs}").status_code == 200
