"""The reaper: re-queues work whose worker died, without waiting for the broker.

A task is acknowledged late (core/queue.py), so the message of a clip whose worker
was SIGKILLed stays unacknowledged in Redis until the visibility timeout (6 hours by
default, as it must exceed the longest clip) brings it back. The store already says what
happened: the worker's lease (`jobs/{id}/lease/{k}` or `lease/split`) stops being renewed
and lapses `UARNVC_LEASE_SECONDS` later, with no chunk committed. Every worker runs a
reaper thread that sweeps the unfinished jobs (`active/...`) every
`UARNVC_REAPER_INTERVAL` seconds and re-queues such a clip (or split) at once.

Safe in every worker: the first reaper to create `jobs/{id}/reaped/{what}-{expiry}`
(put-if-absent) re-queues, the others see the marker; and a duplicate message is
harmless anyway (the lease keeps two workers from training one clip, the exclusive chunk
keeps two commits from mixing). The late original redelivered by Redis hours later
finds the chunk and does nothing.

A second, slower path covers a worker that died between steps (after committing clip k
and before queuing k+1, or while holding a message it had not started): a next step (the
split, or the first clip not committed of one of the job's chains) has no lease, no
message waits in its queue, and it made no progress for `UARNVC_REAPER_STALL_SECONDS`;
then it is re-queued once per such period.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.jobs import Keys, LeaseRecord, load_job, read_lease
from core.settings import Settings
from core.storage import ObjectStore, open_store

log = logging.getLogger(__name__)

Enqueue = Callable[[str, list[Any]], None]
QueueDepth = Callable[[str], int | None]  # messages waiting in a queue; None = unknown
# Drop the broker's unacknowledged copies of a task (kind, args) delivered before a time.
Forget = Callable[[str, list[Any], float], int]
GRACE = 2.0  # seconds past a lease's expiry before it counts as lapsed (clock skew)


class Sweeper:
    """One sweep over the unfinished jobs; keeps what it saw stalled between sweeps."""

    def __init__(
        self,
        store: ObjectStore,
        enqueue: Enqueue,
        *,
        stall_seconds: float,
        queue_depth: QueueDepth | None = None,
        forget: Forget | None = None,
        lease_seconds: float = 30.0,
    ) -> None:
        self.store, self.enqueue = store, enqueue
        self.stall_seconds = stall_seconds
        self.forget = forget
        self.lease_seconds = lease_seconds
        self.queue_depth = queue_depth or (lambda _q: None)
        self._stalled: dict[tuple[str, str], tuple[float, int]] = {}

    def sweep(self, now: float | None = None) -> list[tuple[str, list[Any]]]:
        """Re-queue what needs it; returns the (kind, args) queued by this reaper."""
        now = time.time() if now is None else now
        queued: list[tuple[str, list[Any]]] = []
        seen: set[tuple[str, str]] = set()
        depths: dict[str, int | None] = {}
        for entry in sorted(set(self.store.list("active/"))):
            job_id = entry.rsplit("/", 1)[-1]
            try:
                keys = Keys(job_id)
            except ValueError:
                continue
            try:
                queued += self._job(keys, now, seen, depths)
            except Exception:  # one odd job never stops the sweep of the others
                log.warning("reaper: job %s skipped", job_id, exc_info=True)
        self._stalled = {k: v for k, v in self._stalled.items() if k in seen}
        return queued

    def _job(
        self,
        keys: Keys,
        now: float,
        seen: set[tuple[str, str]],
        depths: dict[str, int | None],
    ) -> list[tuple[str, list[Any]]]:
        listing = set(self.store.list(keys.prefix))
        if keys.job not in listing or keys.failed in listing or keys.cancelled in listing:
            return []  # being created, deleted, or stopped
        out: list[tuple[str, list[Any]]] = []
        held: set[str] = set()  # what a live lease covers, or what was just re-queued
        for key in sorted(k for k in listing if k.startswith(keys.prefix + "lease/")):
            lease = read_lease(self.store, key)
            if lease is None:
                continue
            what = key.rsplit("/", 1)[-1]
            if lease.expires + GRACE > now:
                held.add(what)
                continue
            task = _lapsed_task(keys, what, listing)
            if task is not None and self._requeue_lapsed(keys, what, lease, task, now):
                out.append(task)
                held.add(what)
        if "split" in held:
            return out  # the split queues the chains' first clips itself
        return out + self._stall(keys, listing, held, now, seen, depths)

    def _requeue_lapsed(
        self, keys: Keys, what: str, lease: LeaseRecord, task: tuple[str, list[Any]], now: float
    ) -> bool:
        """One re-queue per lapsed lease, whichever reaper gets there first."""
        if not self.store.put_if_absent(keys.reaped(f"{what}-{int(lease.expires)}"), _stamp(now)):
            return False
        log.warning(
            "reaper: job %s: the lease on %s lapsed %.0f s ago (%s); re-queued",
            keys.id,
            "the split" if what == "split" else f"clip {what}",
            now - lease.expires,
            lease.holder,
        )
        self.enqueue(*task)
        if self.forget is not None:
            # The dead worker's message, delivered before its last renewal, would come
            # back after the visibility timeout as a duplicate: drop it now.
            try:
                self.forget(task[0], task[1], lease.expires - self.lease_seconds + 1)
            except Exception:
                log.warning("reaper: could not drop the dead worker's message", exc_info=True)
        return True

    def _stall(
        self,
        keys: Keys,
        listing: set[str],
        held: set[str],
        now: float,
        seen: set[tuple[str, str]],
        depths: dict[str, int | None],
    ) -> list[tuple[str, list[Any]]]:
        """The job's next steps with no lease (the split, or each chain's first clip not
        committed): each is re-queued if it made no progress for `stall_seconds` while
        its queue was empty (then no message is waiting for it). Per chain, so one chain
        lost between clips is found while the others keep training."""
        out: list[tuple[str, list[Any]]] = []
        for task, queue, progress in self._next_steps(keys, listing):
            what = str(task[1][-1]) if task[0] == "encode" else "split"
            if what in held:
                continue
            name = f"{task[0]}-{task[1][-1]}"
            ident = (keys.id, name)
            seen.add(ident)
            first, mark = self._stalled.get(ident, (now, progress))
            if mark != progress:
                first = now
            self._stalled[ident] = (first, progress)
            if now - first < self.stall_seconds or not self._queue_empty(queue, depths):
                continue
            period = int(now // self.stall_seconds)
            if not self.store.put_if_absent(keys.reaped(f"{name}-stall-{period}"), _stamp(now)):
                continue
            log.warning(
                "reaper: job %s: no worker on %s for %.0f s and its queue is empty; re-queued",
                keys.id,
                name,
                now - first,
            )
            self._stalled[ident] = (now, progress)
            self.enqueue(*task)
            out.append(task)
        return out

    def _next_steps(
        self, keys: Keys, listing: set[str]
    ) -> list[tuple[tuple[str, list[Any]], str, int]]:
        """(task, queue, progress mark) for what the job waits on: the split until its
        header exists, else each chain's first clip without a chunk. The mark changes
        whenever that step moves (any new object for the split; a commit in the chain)."""
        from core.queue import QUEUE_CPU, QUEUE_GPU
        from worker.pipeline import chains_of, clip_count

        if keys.plan not in listing and keys.header not in listing:
            return [(("split", [keys.id]), QUEUE_CPU, len(listing))]
        n = clip_count(self.store, keys)
        job = load_job(self.store, keys.id)
        if n is None or job is None:
            return []
        steps = []
        for run in chains_of(job, n):
            done = sum(1 for i in run if keys.chunk(i) in listing)
            nxt = next((i for i in run if keys.chunk(i) not in listing), None)
            if nxt is not None:
                steps.append((("encode", [keys.id, nxt]), QUEUE_GPU, done))
        return steps

    def _queue_empty(self, queue: str, depths: dict[str, int | None]) -> bool:
        """No message waits in `queue` (perhaps the one for this step); unknown: not empty."""
        if queue not in depths:
            depths[queue] = self.queue_depth(queue)
        return depths[queue] == 0


def _lapsed_task(keys: Keys, what: str, listing: set[str]) -> tuple[str, list[Any]] | None:
    """The task a lapsed lease on `what` (a clip number or "split") left undone, if any."""
    if what == "split":
        return None if keys.plan in listing else ("split", [keys.id])
    if not what.isdigit() or keys.chunk(int(what)) in listing:
        return None
    return ("encode", [keys.id, int(what)])


def _stamp(now: float) -> bytes:
    return json.dumps({"at": now}).encode()


def queue_depth_of(celery_app: Any) -> QueueDepth:
    """Messages waiting in a Celery queue (None when the broker cannot say)."""

    def depth(queue: str) -> int | None:
        from kombu.exceptions import ChannelError

        try:
            with celery_app.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)
                try:
                    ok = conn.default_channel.queue_declare(queue=queue, passive=True)
                    return int(ok.message_count)
                except ChannelError:  # Redis: a queue with no messages has no key
                    return 0
        except Exception as e:
            log.warning("reaper: queue depth of %s unknown: %s", queue, e)
            return None

    return depth


def forget_unacked_of(celery_app: Any) -> Forget | None:
    """On Redis, kombu keeps each delivered, unacknowledged message in the `unacked` hash
    (scored by delivery time in `unacked_index`) until the visibility timeout restores it.
    For a task the reaper has just re-queued, the dead worker's copy is removed from there,
    so nothing is left waiting on the timeout. None for other brokers (the filesystem
    broker keeps no such copies: `uarnvc serve` re-queues after a crash itself)."""
    import base64

    from core.queue import ENCODE_CLIP, SPLIT

    url = str(celery_app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://")):
        return None
    names = {"split": SPLIT, "encode": ENCODE_CLIP}

    def forget(kind: str, args: list[Any], before: float) -> int:
        removed = 0
        with celery_app.connection_for_write() as conn:
            channel = conn.default_channel
            client = channel.client
            tags = client.zrangebyscore(channel.unacked_index_key, 0, before)
            for tag in tags:
                raw = client.hget(channel.unacked_key, tag)
                if raw is None:
                    continue
                try:
                    payload = json.loads(raw)[0]
                    if payload["headers"].get("task") != names[kind]:
                        continue
                    body = payload["body"]
                    if payload.get("properties", {}).get("body_encoding") == "base64":
                        body = base64.b64decode(body)
                    if json.loads(body)[0] != args:
                        continue
                except (ValueError, KeyError, IndexError, TypeError):
                    continue
                client.pipeline().zrem(channel.unacked_index_key, tag).hdel(
                    channel.unacked_key, tag
                ).execute()
                removed += 1
        if removed:
            log.info("reaper: dropped %d unacknowledged copy(ies) of %s %s", removed, kind, args)
        return removed

    return forget


class Reaper:
    """The sweeping thread of one worker process (a daemon: it dies with the worker)."""

    def __init__(self, settings: Settings, enqueue: Enqueue, celery_app: Any = None) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self.celery_app = celery_app
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.reaper_interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="uarnvc-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        sweeper = Sweeper(
            open_store(self.settings),
            self.enqueue,
            stall_seconds=self.settings.reaper_stall_seconds,
            queue_depth=queue_depth_of(self.celery_app) if self.celery_app else None,
            forget=forget_unacked_of(self.celery_app) if self.celery_app else None,
            lease_seconds=self.settings.lease_seconds,
        )
        log.info("reaper: sweeping every %.0f s", self.settings.reaper_interval)
        # A worker started to replace a dead one sweeps at once, then every interval.
        while True:
            try:
                sweeper.sweep()
            except Exception:  # the store is down: the next sweep tries again
                log.warning("reaper: sweep failed", exc_info=True)
            if self._stop.wait(self.settings.reaper_interval):
                return
