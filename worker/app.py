"""The worker's Celery application: `celery -A worker.app worker` (or `uarnvc worker`)."""

from core.queue import make_celery

app = make_celery()
