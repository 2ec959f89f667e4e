"""The task queue's contract: task names, queues, the publish retry policy and the Celery
configuration, from `Settings` only.

Both sides read it: `worker.app` builds the worker's application with it, and the API
builds its own client with `make_celery(settings)` and sends tasks by name (it never
imports the tasks, nor anything from worker/).

Reliability settings (docs/reliability.md): a task is acknowledged only after it returns
(`acks_late`), put back if its worker process dies (`reject_on_worker_lost`), one
message is reserved at a time (`prefetch 1`), and Redis' visibility timeout is set
above the longest clip so a slow clip is not redelivered while it trains.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from core.settings import Settings, get_settings

SPLIT = "uarnvc.split"
ENCODE_CLIP = "uarnvc.encode_clip"
DELIVER_HOOK = "uarnvc.deliver_hook"
QUEUE_CPU = "cpu"  # split: decoding and lossless re-encoding, no accelerator
QUEUE_GPU = "gpu"  # encode_clip: training, where the accelerators are
QUEUE_HOOKS = "hooks"  # deliver_hook: webhook POSTs, never behind a training clip

# Every task by the kind the pipeline names it (worker/pipeline.py `Enqueue`).
TASKS: dict[str, tuple[str, str]] = {
    "split": (SPLIT, QUEUE_CPU),
    "encode": (ENCODE_CLIP, QUEUE_GPU),
    "hook": (DELIVER_HOOK, QUEUE_HOOKS),
}
# A worker handing a job on rides out a broker restart (about 6 minutes); a request that
# queues a new job fails fast instead, so its caller gets a 503 and retries.
PUBLISH_RETRY = {"max_retries": 60, "interval_start": 1, "interval_step": 2, "interval_max": 10}


def send(client: Celery, kind: str, args: list[Any], *, patient: bool = True) -> None:
    """The one way a task is queued: by kind, to its queue, with the publish retry policy
    (or none, `patient=False`, where a caller is waiting for the answer)."""
    name, queue = TASKS[kind]
    if patient:
        client.send_task(name, args=args, queue=queue, retry=True, retry_policy=PUBLISH_RETRY)
    else:
        client.send_task(name, args=args, queue=queue, retry=False)


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the configured broker (filesystem folders, Redis timeout)."""
    url = settings.effective_broker_url
    if url.startswith("filesystem://"):
        base = settings.broker_dir
        folders = {
            "data_folder_in": base / "queue",
            "data_folder_out": base / "queue",
            "processed_folder": base / "processed",
            "control_folder": base / "control",
        }
        for p in folders.values():
            p.mkdir(parents=True, exist_ok=True)
        return {**{k: str(v) for k, v in folders.items()}, "store_processed": False}
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        vt = settings.visibility_timeout
        # Sweep for unacked messages of dead workers every <=10 s (kombu's default
        # throttling makes that ~100 s), so a killed worker's clip comes back promptly.
        return {
            "visibility_timeout": vt,
            "unacked_restore_interval": max(1, min(10, vt // 2)),
            "unacked_restore_throttle": 1,
        }
    return {}


def make_celery(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    app = Celery("uarnvc", broker=s.effective_broker_url, include=["worker.tasks"])
    embedded = s.effective_broker_url.startswith("filesystem://")
    app.conf.update(
        broker_transport_options=broker_options(s),
        broker_connection_retry_on_startup=True,
        result_backend=s.result_backend,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_CPU,
        task_routes={
            SPLIT: {"queue": QUEUE_CPU},
            ENCODE_CLIP: {"queue": QUEUE_GPU},
            DELIVER_HOOK: {"queue": QUEUE_HOOKS},
        },
        # Flower reads task events; the embedded broker has no use for them.
        worker_send_task_events=not embedded,
        task_send_sent_event=not embedded,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app
