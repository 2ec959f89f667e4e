"""Quotas per key, so one tenant cannot hold the workers.

Before: one key could ask for `steps=1000000` and `params=50000000` (days of a GPU
worker) and submit any number of jobs. Before the fix these tests failed: every one of
those requests was accepted with 202.

Must show: a job over the compute budget is refused before anything is stored; a key at
its concurrency limit gets 429 while other keys proceed.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.security.conftest import ALICE, BOB, Api, Servers, assert_problem, new_job, submit


def _stored(api: Api) -> list[str]:
    store = api.data / "store"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


def test_job_over_the_compute_budget_is_refused_before_storing(keyed: Api, video: Path) -> None:
    with keyed.client(ALICE) as alice, keyed.client(BOB) as bob:
        theirs = new_job(bob, video)
        before = _stored(keyed)
        with open(video, "rb") as f:
            r = alice.post(
                "/v1/jobs",
                files={"file": (video.name, f, "video/x-matroska")},
                data={"steps": "1000000", "params": "50000000"},
            )
        body = assert_problem(r, 422, "job-too-large")
        assert "compute budget" in body["detail"] and body["compute"] > body["limit"]
        assert _stored(keyed) == before  # nothing stored: no source, no job, no index
        tmp = keyed.data / "tmp"
        assert not tmp.exists() or list(tmp.iterdir()) == []
        # Within budget is fine, and bob never noticed.
        assert submit(alice, video).status_code == 202
        assert bob.get(f"/v1/jobs/{theirs}").status_code == 200


def test_key_at_its_concurrency_limit_gets_429_others_proceed(
    servers: Servers, video: Path
) -> None:
    api = servers.get(api_keys=f"{ALICE},{BOB}", max_active_jobs="2")
    with api.client(ALICE) as alice, api.client(BOB) as bob:
        mine = [new_job(alice, video), new_job(alice, video)]
        before = _stored(api)
        r = submit(alice, video)
        body = assert_problem(r, 429, "too-many-jobs")
        assert int(r.headers["retry-after"]) >= 1 and "2 unfinished jobs" in body["detail"]
        assert _stored(api) == before
        # A refused key is refused before its body is read: a big upload is not waited for.
        t0 = time.monotonic()
        r = alice.post("/v1/jobs", content=b"\0" * (8 << 20), headers={"content-type": "video/mp4"})
        assert_problem(r, 429, "too-many-jobs")
        assert time.monotonic() - t0 < 5
        # bob proceeds meanwhile.
        assert [submit(bob, video).status_code for _ in range(2)] == [202, 202]
        assert bob.get("/v1/jobs").status_code == 200
        # A finished (here: cancelled) job gives its slot back.
        assert alice.delete(f"/v1/jobs/{mine[0]}").status_code == 204
        assert submit(alice, video).status_code == 202
        assert_problem(submit(alice, video), 429, "too-many-jobs")


def test_queued_jobs_per_key(servers: Servers, video: Path) -> None:
    api = servers.get(api_keys=f"{ALICE},{BOB}", max_queued_jobs="1")
    with api.client(ALICE) as alice, api.client(BOB) as bob:
        new_job(alice, video)  # no worker here: it stays queued
        r = submit(alice, video)
        body = assert_problem(r, 429, "too-many-queued-jobs")
        assert "1 job" in body["detail"] and int(r.headers["retry-after"]) >= 1
        assert submit(bob, video).status_code == 202


def test_idempotent_replay_is_not_refused_by_the_quota(servers: Servers, video: Path) -> None:
    api = servers.get(api_keys=ALICE, max_active_jobs="1")
    with api.client(ALICE) as alice:
        h = {"Idempotency-Key": "only-once"}
        first = submit(alice, video, headers=h)
        assert first.status_code == 202
        again = submit(alice, video, headers=h)
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert_problem(submit(alice, video, headers={"Idempotency-Key": "other"}), 429)
