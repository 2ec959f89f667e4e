"""Logging for the service: plain text for people, one JSON object per line for machines.

`UARNVC_LOG_JSON=1` switches every service process (API, worker, serve) to JSON lines, so
a log shipper (Loki, Elasticsearch, CloudWatch) can filter on `job_id` and `clip` without
parsing messages. The ids come from a context variable set around each task and request
(`log_context`), so existing `log.info("job %s ...")` calls gain them for free and no call
site has to pass `extra=` by hand.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "uarnvc_log_context", default=None
)
# LogRecord attributes that are not user `extra=` fields.
# (uvicorn adds `color_message`, an ANSI-coloured copy of the message.)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Attach fields (job_id=..., clip=...) to every record logged inside the block,
    including by libraries; nested blocks add to the outer fields."""
    current = _CONTEXT.get() or {}
    token = _CONTEXT.set({**current, **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context for the rest of it (e.g. a request handler that
    learns the job id halfway). Within a `log_context` block or an asyncio task the change
    does not leak outside it."""
    _CONTEXT.set({**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}})


def context() -> dict[str, Any]:
    return dict(_CONTEXT.get() or {})


class ContextFilter(logging.Filter):
    """Copies the context fields onto each record (as attributes), so any formatter sees
    them; set on handlers, because logger-level filters miss child loggers' records."""

    def filter(self, record: logging.LogRecord) -> bool:
        for k, v in (_CONTEXT.get() or {}).items():
            if not hasattr(record, k):
                setattr(record, k, v)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the context fields (job_id,
    clip), any `extra=` fields, and exc_info as a string. Never raises on odd values."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_") and k not in out:
                out[k] = v
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(
    level: str = "INFO", json_lines: bool = False, file: str | os.PathLike[str] | None = None
) -> None:
    """Configure the root logger once per process (replacing earlier handlers, so a
    re-run in the same process, e.g. tests, does not duplicate lines); to `file` (appended)
    instead of stderr when given, so a console keeps only what is meant for people."""
    handler: logging.Handler
    if file is not None:
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
