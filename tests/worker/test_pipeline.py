"""The tasks' logic without Celery: idempotent, resumable, lease-guarded, cancellable."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from core.jobs import JobOptions, Keys, write_job
from core.status import job_status
from tests.fixtures.media import TINY
from tests.worker.task_queue import Queue
from worker import pipeline
from worker.lease import Lease


def test_split_then_chain(env) -> None:
    settings, store, job = env
    q = Queue()
    pipeline.split(store, settings, job, q)
    assert q == [("encode", [job, 0])]
    keys = Keys(job)
    assert all(store.exists(keys.frames(k)) for k in range(3))
    pipeline.split(store, settings, job, q)  # a redelivery: no second split
    assert q[-1] == ("encode", [job, 0]) and len(q) == 2
    for k in range(3):
        q.clear()
        m = pipeline.encode(store, settings, job, k, q)
        assert m is not None and m.bytes > 0
        assert q == ([("encode", [job, k + 1])] if k < 2 else [])
        assert not store.exists(keys.lease(k))  # released
    assert job_status(store, job).status == "succeeded"


def test_redelivered_clip_is_skipped_and_chain_continues(env) -> None:
    settings, store, job = env
    q = Queue()
    pipeline.split(store, settings, job, q)
    pipeline.encode(store, settings, job, 0, q)
    chunk = store.get_bytes(Keys(job).chunk(0))
    q.clear()
    assert pipeline.encode(store, settings, job, 0, q) is None  # done before: nothing trained
    assert store.get_bytes(Keys(job).chunk(0)) == chunk
    assert q == [("encode", [job, 1])]  # the first missing clip is queued


def test_lost_state_and_metrics_are_rebuilt_from_chunks(env) -> None:
    from core.codec.chain import ChainState

    settings, store, job = env
    keys = Keys(job)
    q = Queue()
    pipeline.split(store, settings, job, q)
    pipeline.encode(store, settings, job, 0, q)
    pipeline.encode(store, settings, job, 1, q)
    original = ChainState.from_bytes(store.get_bytes(keys.state(1)))
    for key in (keys.state(0), keys.state(1), keys.metrics(1)):
        store.delete(key)
    rebuilt = pipeline.load_state(store, settings, job, 1)
    for name in original.decoded:
        assert np.array_equal(rebuilt.decoded[name], original.decoded[name])
        assert np.array_equal(rebuilt.start[name], original.start[name])
    assert np.allclose(rebuilt.thumb, original.thumb)  # the encoder-only part, restored
    # A redelivered clip 1 repairs its metrics from the chunk.
    pipeline.encode(store, settings, job, 1, Queue())
    m = json.loads(store.get_bytes(keys.metrics(1)))
    assert m["recomputed"] and m["psnr"] > 10
    assert pipeline.encode(store, settings, job, 2, q) is not None  # chain still works


def test_live_lease_blocks_a_duplicate_until_it_expires(env) -> None:
    settings, store, job = env
    keys = Keys(job)
    pipeline.split(store, settings, job, Queue())
    other = Lease(store, keys.lease(0), "other-worker", ttl=settings.lease_seconds)
    assert other.acquire() is None
    with pytest.raises(pipeline.LeaseBusy) as exc:
        pipeline.encode(store, settings, job, 0, Queue(), holder="me")
    assert 0 < exc.value.remaining <= settings.lease_seconds
    assert job_status(store, job).clips[0].status == "running"
    time.sleep(settings.lease_seconds + 0.2)  # the holder died: its lease lapses
    assert pipeline.encode(store, settings, job, 0, Queue(), holder="me") is not None


def test_commit_is_exclusive(env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker commits clip 0 while we train it: its chunk stays, and our state is
    not written next to it (the state is rebuilt from the winning chunk instead)."""
    import core.codec.chain as chain

    settings, store, job = env
    keys = Keys(job)
    pipeline.split(store, settings, job, Queue())
    pipeline.encode(store, settings, job, 0, Queue())
    winner = store.get_bytes(keys.chunk(0))
    for key in (keys.chunk(0), keys.state(0), keys.metrics(0)):
        store.delete(key)
    real = chain.encode_clip

    def racing(*args, **kwargs):
        result = real(*args, **kwargs)
        store.put_if_absent(keys.chunk(0), winner)
        result.chunk = result.chunk + b"-ours"
        return result

    monkeypatch.setattr(chain, "encode_clip", racing)
    q = Queue()
    pipeline.encode(store, settings, job, 0, q)
    assert store.get_bytes(keys.chunk(0)) == winner
    assert not store.exists(keys.state(0))
    assert q == [("encode", [job, 1])]
    monkeypatch.setattr(chain, "encode_clip", real)
    assert pipeline.encode(store, settings, job, 1, Queue()) is not None


def test_cancelled_job_stops(env) -> None:
    from core.jobs import cancel_job

    settings, store, job = env
    q = Queue()
    pipeline.split(store, settings, job, q)
    cancel_job(store, job)
    assert pipeline.encode(store, settings, job, 0, q) is None
    assert not store.exists(Keys(job).chunk(0))
    assert pipeline.resume(store, q) == 0


def test_invalid_source_fails_the_job(env) -> None:
    settings, store, job = env
    store.put_bytes(Keys(job).source, b"not a video at all")
    pipeline.split(store, settings, job, Queue())
    st = job_status(store, job)
    assert st.status == "failed" and st.error.code == "invalid_video"


def test_resume_requeues_what_is_next(env) -> None:
    settings, store, job = env
    q = Queue()
    assert pipeline.resume(store, q) == 1 and q == [("split", [job])]
    pipeline.split(store, settings, job, Queue())
    pipeline.encode(store, settings, job, 0, Queue())
    q.clear()
    assert pipeline.resume(store, q) == 1 and q == [("encode", [job, 1])]


def _with_options(store, job_id: str, **changes) -> None:
    from core.jobs import load_job

    job = load_job(store, job_id)
    job.options = job.options.model_copy(update=changes)
    write_job(store, job)


def test_groups_are_chains_of_their_own_with_the_same_bytes(env, small_video: Path) -> None:
    """With key_interval, each group is queued at split and trains without waiting for
    the others (N workers, N groups at once); the stream is byte-identical to the CLI's."""
    from core.codec.files import encode_file

    settings, store, job = env
    _with_options(store, job, key_interval=2)
    q = Queue()
    pipeline.split(store, settings, job, q)
    assert q == [("encode", [job, 0]), ("encode", [job, 2])]  # 3 clips: groups {0, 1}, {2}
    q.clear()
    assert pipeline.encode(store, settings, job, 2, q) is not None  # before clip 0 exists
    assert q == []  # the last of its group: nothing follows
    pipeline.encode(store, settings, job, 0, q)
    assert q == [("encode", [job, 1])]
    q.clear()
    pipeline.encode(store, settings, job, 1, q)
    assert q == [] and job_status(store, job).status == "succeeded"
    keys = Keys(job)
    served = store.get_bytes(keys.header) + b"".join(
        store.get_bytes(keys.chunk(k)) for k in range(3)
    )
    opts = JobOptions.model_validate({**TINY, "key_interval": 2}).to_encode_options()
    out = small_video.parent / "cli.uarv"
    encode_file(small_video, out, opts)
    assert served == out.read_bytes()


def test_resume_requeues_every_unfinished_group(env) -> None:
    settings, store, job = env
    _with_options(store, job, key_interval=2)
    pipeline.split(store, settings, job, Queue())
    pipeline.encode(store, settings, job, 2, Queue())
    q = Queue()
    assert pipeline.resume(store, q) == 1 and q == [("encode", [job, 0])]
    pipeline.encode(store, settings, job, 0, Queue())
    q.clear()
    assert pipeline.resume(store, q) == 1 and q == [("encode", [job, 1])]
