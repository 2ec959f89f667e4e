"""The Celery tasks' retry policy (worker/tasks.py), run eagerly (`Task.apply`): a store
error is retried by Celery's autoretry and, once the retries are spent, the job is
marked failed instead of waiting forever."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest
from pydantic import SecretStr

from core import webhooks
from core.jobs import load_job, write_job
from core.status import job_status
from core.storage import ObjectStore, StoreError
from tests.api.test_webhooks import SECRET, Receiver
from tests.worker.task_queue import Queue
from worker import hooks, pipeline


class FramesUnreadable:
    """The job's store, with every read of a clip's frames failing: a store that answers
    some requests and not others (a flapping S3 endpoint) cannot be made on demand with
    a real server, so this one fault is injected."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.url, self.failed_reads = inner, inner.url, 0

    def get_stream(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        if "/frames/" in key:
            self.failed_reads += 1
            raise StoreError(f"injected: cannot read {key}")
        return self.inner.get_stream(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def tasks(env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from worker import tasks

    settings, _store, _job = env
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    monkeypatch.setattr(tasks, "enqueue", Queue())
    yield tasks


def test_store_errors_are_retried_then_fail_the_job(
    env,
    tasks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, store, job = env
    pipeline.split(store, settings, job, Queue())
    flaky = FramesUnreadable(store)
    monkeypatch.setattr(tasks, "_store", flaky)
    result = tasks.encode_clip.apply(args=[job, 0])
    assert isinstance(result.result, StoreError)
    assert flaky.failed_reads == tasks.MAX_RETRIES + 1  # the first try and every retry
    st = job_status(store, job)
    assert st.status == "failed" and st.error.code == "store_unavailable"
    assert st.error.detail.startswith("clip 0: injected")


def test_a_webhook_is_retried_then_given_up(
    env,
    tasks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, store, job = env
    down = Receiver([500])
    try:
        record = load_job(store, job)
        write_job(store, record.model_copy(update={"webhook_url": down.url}))
        hooked = settings.model_copy(
            update={"webhook_secret": SecretStr(SECRET), "webhook_allow_private": True}
        )
        monkeypatch.setattr(tasks, "get_settings", lambda: hooked)
        monkeypatch.setattr(tasks, "_store", store)
        q = Queue()
        hooks.fail(store, job, "x", "a failure to announce", q)
        [(kind, [_job, wid])] = q
        assert kind == "hook"
        tasks.deliver_hook.apply(args=[job, wid])
        retries = tasks.HookRetryTask.retry_kwargs["max_retries"]
        assert len(down.got) == retries + 1  # every attempt reached the receiver
        rec = webhooks.read_record(store, job, wid)
        assert rec["state"] == "failed" and rec["attempts"] == retries + 1
        assert job_status(store, job).error.code == "x"  # the webhook failed, not the job
    finally:
        down.close()
