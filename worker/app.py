"""The worker's Celery application: `celery -A worker.app worker` (or `uarnvc worker`)."""

from worker.celeryconf import make_celery

app = make_celery()
