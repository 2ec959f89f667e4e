"""Celery tasks: thin wrappers that give `worker.pipeline` a store, retries and a queue.

Torch (and CUDA) are imported only inside the task bodies, i.e. in the pool's child
process after the fork: a CUDA context created before a prefork pool forks is unusable
in the children (DESIGN.md §5).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

from celery import Task
from celery.signals import worker_process_init

from core.jobs import mark_failed
from core.logs import log_context
from core.settings import get_settings
from core.storage import ObjectStore, StoreError, open_store
from worker import pipeline
from worker.app import app
from worker.celeryconf import ENCODE_CLIP, QUEUE_CPU, QUEUE_GPU, SPLIT

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


# Publishing the next task waits out a broker outage (a Redis restart, issue 5) instead of
# failing the job: ~10 minutes of retries, while this task stays unacknowledged, so a
# worker that dies meanwhile has its task redelivered, which re-drives the chain.
PUBLISH_RETRY = {"max_retries": 60, "interval_start": 1, "interval_step": 2, "interval_max": 10}


def enqueue(kind: str, args: list[Any]) -> None:
    """Send the next task by name: split goes to the cpu queue, clips to the gpu queue."""
    name, queue = (SPLIT, QUEUE_CPU) if kind == "split" else (ENCODE_CLIP, QUEUE_GPU)
    app.send_task(name, args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY)


def _backoff(retries: int) -> float:
    return min(300.0, 2.0**retries) * (0.5 + random.random())


@app.task(name=SPLIT, bind=True, max_retries=MAX_RETRIES)
def split(self: Task, job_id: str) -> None:
    with log_context(job_id=job_id, task="split"):
        try:
            pipeline.split(store(), get_settings(), job_id, enqueue)
        except StoreError as e:
            log.warning("split %s: store error, retrying: %s", job_id, e)
            raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
        except Exception as e:
            log.exception("split %s failed", job_id)
            mark_failed(store(), job_id, "split_failed", f"{type(e).__name__}: {e}")


@app.task(name=ENCODE_CLIP, bind=True, max_retries=None)
def encode_clip(self: Task, job_id: str, k: int) -> None:
    holder = f"{self.request.hostname}:{os.getpid()}:{self.request.id}"
    # Every line below, errors included, carries the job and clip ids (JSON logs).
    with log_context(job_id=job_id, clip=k, task="encode_clip"):
        try:
            pipeline.encode(store(), get_settings(), job_id, k, enqueue, holder=holder)
        except pipeline.LeaseBusy as e:
            # Another worker trains this clip; come back when its lease would have expired.
            raise self.retry(countdown=e.remaining + 1 + random.random()) from None
        except StoreError as e:
            if self.request.retries >= MAX_RETRIES:
                mark_failed(store(), job_id, "store_unavailable", f"clip {k}: {e}")
                return
            log.warning("clip %s/%d: store error, retrying: %s", job_id, k, e)
            raise self.retry(exc=e, countdown=_backoff(self.request.retries)) from e
        except Exception as e:
            log.exception("clip %s/%d failed", job_id, k)
            mark_failed(store(), job_id, "encode_failed", f"clip {k}: {type(e).__name__}: {e}")
