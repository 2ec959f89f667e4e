"""A task queue for tests: an `Enqueue` (worker/pipeline.py) that records what was sent."""

from __future__ import annotations


class Queue(list):
    def __call__(self, kind: str, args: list) -> None:
        self.append((kind, list(args)))
