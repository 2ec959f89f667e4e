"""Idempotency claims: exclusive creation, roll-back, and taking over an abandoned one."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from api import idempotency
from api.problems import Problem
from core.jobs import idempotency_prefix, new_job_id
from core.storage import LocalStore
from tests.api.conftest import AppFactory, post_video


def test_one_claim_wins_among_many(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        try:
            results.append(idempotency.try_claim(store, "o", "k", new_job_id(), "fp"))
        except idempotency._Pending:
            results.append("pending")

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, idempotency.Claimed) for r in results) == 1
    assert results.count("pending") == 7


def test_roll_back_frees_the_key_and_a_different_request_is_422(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = idempotency.try_claim(store, "o", "k", new_job_id(), "fp")
    assert isinstance(first, idempotency.Claimed)
    with pytest.raises(Problem) as e:
        idempotency.try_claim(store, "o", "k", new_job_id(), "another request")
    assert e.value.status == 422
    idempotency.roll_back(store, first)
    again = idempotency.try_claim(store, "o", "k", new_job_id(), "fp")
    assert isinstance(again, idempotency.Claimed) and again.key == first.key


def test_an_abandoned_claim_is_superseded_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    prefix = idempotency_prefix("o", "k")
    stale = {"job": new_job_id(), "fingerprint": "fp", "at": time.time() - 3600}
    store.put_bytes(prefix + "00000000", json.dumps(stale).encode())
    got = idempotency.try_claim(store, "o", "k", new_job_id(), "fp")
    assert isinstance(got, idempotency.Claimed) and got.key == prefix + "00000001"
    with pytest.raises(idempotency._Pending):  # the new claim is fresh: others wait
        idempotency.try_claim(store, "o", "k", new_job_id(), "fp")


def test_in_progress_claim_is_409_after_waiting(
    make_client: AppFactory, small_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client()
    store = c.app.state.store
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    from core.jobs import owner_id

    # Another request holds the key and has not written its job yet.
    fp = None
    r = post_video(c, small_video, {"Idempotency-Key": "probe"})
    assert r.status_code == 202
    for key in store.list("idem/"):
        fp = json.loads(store.get_bytes(key))["fingerprint"]
    prefix = idempotency_prefix(owner_id(None), "held")
    held = {"job": new_job_id(), "fingerprint": fp, "at": time.time()}
    store.put_bytes(prefix + "00000000", json.dumps(held).encode())
    r = post_video(c, small_video, {"Idempotency-Key": "held"})
    assert r.status_code == 409 and r.headers["retry-after"] == "1"
    assert r.json()["type"] == "urn:uarnvc:problem:idempotency-key-in-use"
