"""`Idempotency-Key` for `POST /v1/jobs`: one job per key, however many copies arrive at once.

A claim is an object `idem/{owner}/{sha256(key)}/{generation}` holding the job id it
reserves, the request's fingerprint and when it was made. Claims are only ever *created*
with `put_if_absent`, so of any number of concurrent requests exactly one wins a
generation. The winner then either finishes (writes the job's `job.json`) or rolls back
(deletes its claim). Everyone else:

- sees the winner's job.json: the request is replayed (202, `Idempotent-Replayed`);
- sees a claim without job.json: the winner is still storing the upload, so they wait
  (up to `WAIT_SECONDS`) and then answer 409 with Retry-After, as the IETF
  Idempotency-Key draft asks for a request still in progress;
- sees the claim gone (rolled back): they try to claim again.

A claim whose job never appeared for `ABANDONED_SECONDS` (its creator crashed), or
whose job no longer exists, is superseded by creating the next generation, again with
`put_if_absent`: taking over is as exclusive as claiming.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import anyio

from api.problems import Problem
from core.jobs import idempotency_prefix, load_job, valid_job_id
from core.storage import NotFound, ObjectStore

WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
ABANDONED_SECONDS = 600.0  # far above the time to store an upload of the size limit
RETRY_AFTER = 1


@dataclass
class Claimed:
    key: str  # the claim object: delete it to roll back


@dataclass
class Replay:
    job_id: str


class _Pending(Exception):
    """The key's current claim is being completed by another request."""


def _gen(key: str) -> int:
    return int(key.rsplit("/", 1)[1])


def try_claim(
    store: ObjectStore, owner: str, idem: str, job_id: str, fingerprint: str
) -> Claimed | Replay:
    """One attempt (blocking store calls); raises _Pending while another request holds it."""
    prefix = idempotency_prefix(owner, idem)
    body = json.dumps({"job": job_id, "fingerprint": fingerprint, "at": time.time()}).encode()
    for _ in range(8):
        claims = [k for k in store.list(prefix) if k[len(prefix) :].isdigit()]
        if not claims:
            if store.put_if_absent(f"{prefix}{0:08d}", body):
                return Claimed(f"{prefix}{0:08d}")
            continue
        latest = max(claims, key=_gen)
        try:
            prev = json.loads(store.get_bytes(latest))
        except NotFound:  # rolled back just now
            continue
        except ValueError:
            prev = {}
        prev_job = prev.get("job", "")
        exists = valid_job_id(prev_job) and load_job(store, prev_job) is not None
        abandoned = time.time() - float(prev.get("at", 0)) > ABANDONED_SECONDS
        if exists or not abandoned:
            if prev.get("fingerprint") != fingerprint:
                raise Problem(
                    422,
                    "this Idempotency-Key was used for a different request",
                    code="idempotency-key-reused",
                )
            if exists:
                return Replay(prev_job)
            raise _Pending
        nxt = f"{prefix}{_gen(latest) + 1:08d}"  # supersede the abandoned claim
        if store.put_if_absent(nxt, body):
            return Claimed(nxt)
    raise _Pending


async def claim(
    store: ObjectStore, owner: str, idem: str, job_id: str, fingerprint: str
) -> Claimed | Replay:
    """Claim the key for `job_id` or find the job it already made; 409 if the request
    that holds it does not finish within WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            return await anyio.to_thread.run_sync(
                try_claim, store, owner, idem, job_id, fingerprint
            )
        except _Pending:
            if time.monotonic() > deadline:
                raise Problem(
                    409,
                    "a request with this Idempotency-Key is still being processed; retry",
                    code="idempotency-key-in-use",
                    headers={"Retry-After": str(RETRY_AFTER)},
                    retry_after=RETRY_AFTER,
                ) from None
            await anyio.sleep(POLL_SECONDS)


def roll_back(store: ObjectStore, claimed: Claimed | None) -> None:
    """Give the key back (the job was not created): the next request claims it again."""
    if claimed is not None:
        store.delete(claimed.key)
