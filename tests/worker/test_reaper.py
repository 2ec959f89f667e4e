"""The reaper's decisions, against a real local store (worker/reaper.py): what a lapsed
lease, a live one, a committed clip and a stalled job each lead to, with several reapers
sweeping at once. The end-to-end run with killed workers is in tests/e2e/test_reaper.py."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from core.jobs import Keys, active_key
from core.status import job_status
from tests.worker.task_queue import Queue
from worker import pipeline
from worker.reaper import Sweeper


def _lease(store, key: str, expires: float, holder: str = "dead-worker") -> None:
    store.put_bytes(key, json.dumps({"holder": holder, "expires": expires}).encode())


def _sweeper(store, q: Queue, depth: int | None = 0, stall: float = 300.0) -> Sweeper:
    return Sweeper(store, q, stall_seconds=stall, queue_depth=lambda _q: depth)


def test_lapsed_clip_lease_is_requeued_once_across_reapers(env) -> None:
    settings, store, job = env
    store.put_bytes(active_key("local", job), b"{}")
    pipeline.split(store, settings, job, Queue())
    keys = Keys(job)
    now = time.time()
    _lease(store, keys.lease(0), now + 20)  # a worker trains clip 0
    q1, q2 = Queue(), Queue()
    a, b = _sweeper(store, q1), _sweeper(store, q2)
    assert a.sweep(now) == [] and b.sweep(now) == []  # live: left alone
    assert job_status(store, job).status == "running"

    # The worker is SIGKILLed: the lease is not renewed and lapses.
    later = now + 25
    assert a.sweep(later) == [("encode", [job, 0])]
    assert b.sweep(later) == []  # the other worker's reaper sees the marker
    assert a.sweep(later + 10) == []  # and nothing twice for one lapsed lease
    assert q1 == [("encode", [job, 0])] and q2 == []
    # While nobody holds it, the job is waiting for a worker, not running.
    _lease(store, keys.lease(0), time.time() - 5)
    st = job_status(store, job)
    assert st.status == "queued" and st.clips[0].status == "pending"

    # The re-queued clip is taken, and its new worker dies too: a new lapse, a new re-queue.
    _lease(store, keys.lease(0), later + 30, holder="second")
    assert a.sweep(later + 31) == []
    assert b.sweep(later + 60) == [("encode", [job, 0])]


def test_committed_clip_or_stopped_job_is_not_requeued(env) -> None:
    settings, store, job = env
    store.put_bytes(active_key("local", job), b"{}")
    pipeline.split(store, settings, job, Queue())
    pipeline.encode(store, settings, job, 0, Queue())
    keys = Keys(job)
    _lease(store, keys.lease(0), time.time() - 60)  # a lease left behind by a late crash
    q = Queue()
    assert _sweeper(store, q, depth=1).sweep() == [] and q == []
    _lease(store, keys.lease(1), time.time() - 60)
    store.put_bytes(keys.failed, b'{"code": "x", "detail": "y"}')
    assert _sweeper(store, q).sweep() == [] and q == []


def test_lapsed_split_lease_requeues_the_split(env) -> None:
    settings, store, job = env
    store.put_bytes(active_key("local", job), b"{}")
    keys = Keys(job)
    _lease(store, keys.split_lease, time.time() - 30)
    q = Queue()
    assert _sweeper(store, q).sweep() == [("split", [job])]
    # The split it re-queued takes over the lapsed lease and finishes.
    pipeline.split(store, settings, job, Queue())
    assert not store.exists(keys.split_lease) and store.exists(keys.plan)


def test_stalled_job_is_requeued_only_when_its_queue_is_empty(env) -> None:
    """A worker that died between clips leaves no lease: after the stall period with an
    empty queue (so no message waits for the clip), the next clip is re-queued."""
    settings, store, job = env
    store.put_bytes(active_key("local", job), b"{}")
    pipeline.split(store, settings, job, Queue())
    pipeline.encode(store, settings, job, 0, Queue())  # clip 1's message is then lost
    now = time.time()
    q = Queue()
    busy = _sweeper(store, q, depth=3, stall=60)
    assert busy.sweep(now) == [] and busy.sweep(now + 61) == []  # messages wait: leave it
    idle = _sweeper(store, q, depth=0, stall=60)
    assert idle.sweep(now) == []  # first sight
    assert idle.sweep(now + 30) == []  # not long enough
    assert idle.sweep(now + 61) == [("encode", [job, 1])]
    assert idle.sweep(now + 62) == []
    assert _sweeper(store, q, depth=0, stall=60).sweep(now + 62) == []  # fresh eyes, fresh clock


@pytest.mark.parametrize("exact", [True, False])
def test_clip0_is_queued_while_split_runs_ahead(env, exact: bool, monkeypatch) -> None:
    """With an exact frame count, clip 0 is queued as soon as its frames are stored, before
    the rest is split (the status then shows the clips planned so far); without one the
    header can only be written at the end, and clip 0 is queued then."""
    import core.video

    settings, store, job = env
    keys = Keys(job)
    real_probe = core.video.probe

    def probe(*a, **kw):
        info = real_probe(*a, **kw)
        return info if exact else dataclasses.replace(info, frames_exact=False)

    monkeypatch.setattr(core.video, "probe", probe)
    seen: list[tuple] = []

    def enqueue(kind: str, args: list) -> None:
        st = job_status(store, job)
        seen.append((kind, args, store.exists(keys.plan), st.clips_planned, st.clips_total_known))

    pipeline.split(store, settings, job, enqueue)
    if exact:
        assert seen == [("encode", [job, 0], False, 1, True)]
        # The clip trains from the header alone, before the plan exists.
        store.delete(keys.plan)
        q = Queue()
        assert pipeline.encode(store, settings, job, 0, q) is not None
        assert q == [("encode", [job, 1])]
        store.delete(keys.frames(2))  # not split yet: the task comes back later
        pipeline.encode(store, settings, job, 1, q)
        with pytest.raises(pipeline.FramesNotReady):
            pipeline.encode(store, settings, job, 2, q)
    else:
        assert seen == [("encode", [job, 0], True, 3, True)]


def test_stall_is_judged_per_chain(env) -> None:
    """Independent chains: one lost between clips is re-queued while another still trains
    (a live lease on one chain used to hide a stall in every other)."""
    from core.jobs import load_job, write_job

    settings, store, job = env
    record = load_job(store, job)
    opts = record.options.model_copy(update={"mode": "independent"})
    write_job(store, record.model_copy(update={"options": opts}))
    store.put_bytes(active_key("local", job), b"{}")
    q = Queue()
    pipeline.split(store, settings, job, q)
    assert sorted(args[1] for _kind, args in q) == [0, 1, 2]  # three chains of one clip
    pipeline.encode(store, settings, job, 0, Queue())
    keys = Keys(job)
    now = time.time()
    _lease(store, keys.lease(1), now + 120, holder="alive")  # chain 1 trains; 2's message lost
    idle = _sweeper(store, Queue(), depth=0, stall=60)
    assert idle.sweep(now) == []
    assert idle.sweep(now + 61) == [("encode", [job, 2])]
    assert idle.sweep(now + 62) == []
