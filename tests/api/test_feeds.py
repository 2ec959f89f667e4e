"""Event streams share one status derivation per job (api/streaming.py JobFeed)."""

from __future__ import annotations

from pathlib import Path

import anyio

from api import streaming
from tests.api.conftest import AppFactory, post_video, run_inline


def test_many_streams_one_derivation(make_client: AppFactory, small_video: Path) -> None:
    """40 streams on one job for 1 s at a 0.1 s poll: one snapshot per interval for all of
    them, and one status derivation in all (a queued job's objects never change)."""
    c = make_client()
    job = post_video(c, small_video).json()["id"]
    feeds = streaming.Feeds(c.app.state.store, poll=0.1)
    feed = feeds.join(job)  # a handle to read its counters after the streams end
    seen: list[int] = []

    async def watch() -> None:
        n = 0
        with anyio.move_on_after(1.0):
            async for _ev in streaming.events(feeds, job):
                n += 1
        seen.append(n)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(watch)

    anyio.run(main)
    assert len(seen) == 40 and seen == [0] * 40  # queued: nothing to tell
    assert feed.refreshes == 1, feed.refreshes
    assert 5 <= feed.snapshot.version <= 13, feed.snapshot.version  # ~one per interval
    assert feed.users == 1  # every stream left
    feeds.leave(feed)
    assert feeds.feeds == {}


def test_streams_see_every_clip_once(make_client: AppFactory, small_video: Path) -> None:
    c = make_client()
    store = c.app.state.store
    job = post_video(c, small_video).json()["id"]
    feeds = streaming.Feeds(store, poll=0.05)
    results: list[list[tuple[str, str | None]]] = []

    async def watch(last: str | None) -> None:
        out = []
        async for ev in streaming.events(feeds, job, last):
            out.append((ev["event"], ev.get("id")))
        results.append(out)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for last in (None, None, "0", "²", "\\u0663"):
                tg.start_soon(watch, last)
            await anyio.to_thread.run_sync(run_inline, c, job)

    anyio.run(main)
    for out in results:
        done = [i for e, i in out if e == "clip_done"]
        assert out[-1][0] == "job_done"
        assert done in (["0", "1", "2"], ["1", "2"]), out
    assert sum(1 for out in results if [i for e, i in out if e == "clip_done"] == ["1", "2"]) == 1
