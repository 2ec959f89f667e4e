"""Celery configuration, from `Settings` only.

`worker.app` builds the worker's application with it; the API builds its own client
with `make_celery(settings)` and sends tasks by name (it never imports the tasks).

Reliability settings follow DESIGN.md §5: a task is acknowledged only after it returns
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
QUEUE_CPU = "cpu"  # split: decoding and lossless re-encoding, no accelerator
QUEUE_GPU = "gpu"  # encode_clip: training, where the accelerators are


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
        task_routes={SPLIT: {"queue": QUEUE_CPU}, ENCODE_CLIP: {"queue": QUEUE_GPU}},
        # Flower reads task events; the embedded broker has no use for them.
        worker_send_task_events=not embedded,
        task_send_sent_event=not embedded,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app
