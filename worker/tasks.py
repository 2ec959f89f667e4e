"""Celery tasks: thin wrappers that give `worker.pipeline` a store, retries and a queue.

Torch (and CUDA) are imported only inside the task bodies, i.e. in the pool's child
process after the fork: a CUDA context created before a prefork pool forks is unusable
in the children (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Any, ClassVar

from celery import Task
from celery.signals import worker_process_init, worker_ready

from core.logs import log_context
from core.queue import DELIVER_HOOK, ENCODE_CLIP, SPLIT, send
from core.settings import get_settings
from core.storage import ObjectStore, StoreError, open_store
from worker import hooks, pipeline
from worker.app import app

log = logging.getLogger(__name__)
MAX_RETRIES = 10
_store: ObjectStore | None = None


def store() -> ObjectStore:
    """One store (one boto3 client) per worker process, made after the fork."""
    global _store
    if _store is None:
        _store = open_store(get_settings())
    return _store


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    global _store
    _store = None
    threads = get_settings().torch_threads
    if threads:
        import torch

        torch.set_num_threads(threads)


def _bound_torch_threads() -> None:
    """UARNVC_TORCH_THREADS in the process that trains, whatever the pool (the solo pool
    trains in the main process, where worker_process_init is not sent)."""
    threads = get_settings().torch_threads
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@worker_ready.connect
def _start_reaper(**_: Any) -> None:
    """Every worker sweeps for lapsed leases (worker/reaper.py): with the broker's 6-hour
    visibility timeout, a killed worker's clip would otherwise wait that long."""
    from worker.reaper import Reaper

    Reaper(get_settings(), enqueue, app).start()


# Publishing the next task waits out a broker outage (a Redis restart) instead of
# failing the job: ~10 minutes of retries, while this task stays unacknowledged, so a
# worker that dies meanwhile has its task redelivered, which re-drives the chain.
def enqueue(kind: str, args: list[Any]) -> None:
    """Send the next task: split to the cpu queue, clips to the gpu queue, webhook
    deliveries to the hooks queue (core/queue.py `send`)."""
    send(app, kind, args)


class StoreRetryTask(Task):
    """A pipeline task: a store error is retried by Celery (`autoretry_for`) with
    exponential backoff and full jitter, 2 s doubling up to 5 minutes, `MAX_RETRIES`
    times; once they are spent, `on_failure` marks the job failed, so a job never waits
    on a store that stays down."""

    autoretry_for = (StoreError,)
    retry_backoff = 2
    retry_backoff_max = 300
    retry_jitter = True
    retry_kwargs: ClassVar[dict[str, int]] = {"max_retries": MAX_RETRIES}

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, StoreError):
            job_id = args[0]
            where = f"clip {args[1]}" if len(args) > 1 else "split"
            with contextlib.suppress(Exception):  # the store may still be down
                hooks.fail(store(), job_id, "store_unavailable", f"{where}: {exc}", enqueue)


@app.task(name=SPLIT, bind=True, base=StoreRetryTask, max_retries=None)
def split(self: Task, job_id: str) -> None:
    holder = f"{self.request.hostname}:{os.getpid()}:{self.request.id}"
    with log_context(job_id=job_id, task="split"):
        try:
            pipeline.split(store(), get_settings(), job_id, enqueue, holder=holder)
        except pipeline.LeaseBusy as e:
            # Another worker splits this job; if it dies, its lease lapses and this retry
            # (or the reaper) takes over.
            raise self.retry(countdown=e.remaining + 1 + random.random()) from None
        except StoreError:
            raise  # retried by Celery (StoreRetryTask)
        except Exception as e:
            log.exception("split %s failed", job_id)
            hooks.fail(store(), job_id, "split_failed", f"{type(e).__name__}: {e}", enqueue)


@app.task(name=ENCODE_CLIP, bind=True, base=StoreRetryTask, max_retries=None)
def encode_clip(self: Task, job_id: str, k: int) -> None:
    holder = f"{self.request.hostname}:{os.getpid()}:{self.request.id}"
    _bound_torch_threads()
    # Every line below, errors included, carries the job and clip ids (JSON logs).
    with log_context(job_id=job_id, clip=k, task="encode_clip"):
        try:
            pipeline.encode(store(), get_settings(), job_id, k, enqueue, holder=holder)
        except pipeline.LeaseBusy as e:
            # Another worker trains this clip; come back when its lease would have expired.
            raise self.retry(countdown=e.remaining + 1 + random.random()) from None
        except pipeline.FramesNotReady:
            # The split (running ahead) has not stored this clip's frames yet.
            raise self.retry(countdown=1 + random.random()) from None
        except StoreError:
            raise  # retried by Celery (StoreRetryTask)
        except Exception as e:
            log.exception("clip %s/%d failed", job_id, k)
            detail = f"clip {k}: {type(e).__name__}: {e}"
            hooks.fail(store(), job_id, "encode_failed", detail, enqueue)


class HookRetryTask(Task):
    """A webhook delivery: a non-2xx answer or a store error is retried by Celery, 2, 4,
    8, ... s with full jitter (receivers that came back are not hit by every retry at
    once), at most 10 minutes apart, UARNVC_WEBHOOK_RETRIES times; then `on_failure`
    records that it gave up. The job itself never fails for a webhook."""

    autoretry_for = (hooks.DeliveryFailed, StoreError)
    retry_backoff = 2
    retry_backoff_max = 600
    retry_jitter = True
    retry_kwargs: ClassVar[dict[str, int]] = {"max_retries": get_settings().webhook_retries}

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, hooks.DeliveryFailed | StoreError):
            job_id, wid = args
            with contextlib.suppress(Exception):
                hooks.give_up(store(), job_id, wid, str(exc))


@app.task(name=DELIVER_HOOK, bind=True, base=HookRetryTask, max_retries=None)
def deliver_hook(self: Task, job_id: str, wid: str) -> None:
    """One delivery attempt (HookRetryTask retries it). Never marks the job failed: the
    outcome is in jobs/{id}/hooks/{wid}.json."""
    with log_context(job_id=job_id, task="deliver_hook"):
        try:
            hooks.deliver(store(), get_settings(), job_id, wid)
        except (hooks.DeliveryFailed, StoreError) as e:
            log.info("webhook %s: attempt failed: %s", wid, e)
            raise
        except Exception:
            log.exception("webhook %s of job %s: delivery error", wid, job_id)
