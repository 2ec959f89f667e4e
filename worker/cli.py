"""`uarnvc serve | api | worker`: the service's command-line entry points.

`core/cli.py` discovers these through the entry-point group `uarnvc.commands` (each
`register_*` adds one subparser); `python -m worker.cli ...` runs them without it.

- `serve`  the embedded service: API + one worker subprocess on a `filesystem://`
           broker and a local store under --data-dir; no external servers.
- `api`    the API alone (uvicorn), for scale-out with Redis and S3.
- `worker` a Celery worker for --queues (cpu: split, gpu: encode_clip).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core.settings import Settings

log = logging.getLogger("uarnvc.service")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _setup_logging(settings: Settings) -> None:
    """Text or JSON lines (UARNVC_LOG_JSON) for this process and the loggers of uvicorn
    and Celery, which propagate to the root logger."""
    from core.logs import setup_logging

    setup_logging(settings.log_level, settings.log_json)


def _uvicorn_log_config(settings: Settings) -> dict | None:
    """None keeps uvicorn from installing its own text handlers, so its access and error
    lines go through our JSON formatter; otherwise uvicorn's default (coloured) config."""
    import uvicorn.config

    return None if settings.log_json else uvicorn.config.LOGGING_CONFIG


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the command-line flags on top."""
    overrides = {}
    for name in ("host", "port", "data_dir", "broker_url", "store_url", "device"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def safe_host(host: str, settings: Settings) -> str:
    """Without API keys the API is open to anyone who can reach it: loopback only."""
    if settings.api_keys:
        return host
    if host not in LOOPBACK:
        log.warning(
            "no API keys configured (UARNVC_API_KEYS): refusing to listen on %s; "
            "listening on 127.0.0.1 only",
            host,
        )
        return "127.0.0.1"
    log.warning("no API keys configured (UARNVC_API_KEYS): listening on %s only", host)
    return host


def _child_env(settings: Settings) -> dict[str, str]:
    """The settings a child process must share with this one, as UARNVC_* variables."""
    env = dict(os.environ)
    env["UARNVC_DATA_DIR"] = str(settings.data_dir.resolve())
    for name in ("broker_url", "store_url", "device"):
        value = getattr(settings, name)
        if value is not None:
            env[f"UARNVC_{name.upper()}"] = str(value)
    return env


# ------------------------------------------------------------------------------- worker


def run_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _setup_logging(settings)
    os.environ.update({k: v for k, v in _child_env(settings).items() if k.startswith("UARNVC_")})
    from core.settings import get_settings

    get_settings.cache_clear()
    from worker.app import app

    queues = args.queues
    pool = args.pool or ("solo" if args.concurrency == 1 else "prefork")
    argv = [
        "worker",
        "-Q",
        queues,
        "-c",
        str(args.concurrency),
        "--pool",
        pool,
        "-l",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv += ["-n", args.hostname]
    if args.max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(args.max_tasks_per_child)]
    if args.resume:
        _resume(settings)
    app.worker_main(argv)
    return 0


def _resume(settings: Settings) -> None:
    from core.storage import open_store
    from worker import pipeline
    from worker.celeryconf import ENCODE_CLIP, QUEUE_CPU, QUEUE_GPU, SPLIT, make_celery

    client = make_celery(settings)

    def enqueue(kind: str, a: list) -> None:
        if kind == "split":
            client.send_task(SPLIT, args=a, queue=QUEUE_CPU)
        else:
            client.send_task(ENCODE_CLIP, args=a, queue=QUEUE_GPU)

    n = pipeline.resume(open_store(settings), enqueue)
    if n:
        log.info("resumed %d unfinished job(s)", n)


def register_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Celery worker (split on cpu, encode_clip on gpu)")
    p.add_argument("--queues", default="cpu,gpu", help="comma-separated: cpu, gpu")
    p.add_argument("--concurrency", type=int, default=1, help="processes (1 per GPU)")
    p.add_argument(
        "--pool", choices=["solo", "prefork", "threads"], help="default: solo if concurrency 1"
    )
    p.add_argument("--hostname", "-n", help="Celery node name (unique per worker)")
    p.add_argument("--max-tasks-per-child", type=int, help="recycle processes (RSS)")
    p.add_argument("--device", help="torch device (UARNVC_DEVICE)")
    p.add_argument("--data-dir", type=Path, help="UARNVC_DATA_DIR")
    p.add_argument(
        "--resume", action="store_true", help="re-queue unfinished jobs first (filesystem broker)"
    )
    p.set_defaults(func=run_worker)


# ---------------------------------------------------------------------------------- api


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args)
    _setup_logging(settings)
    host = safe_host(settings.host, settings)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=settings.port,
        log_level="info",
        log_config=_uvicorn_log_config(settings),
    )
    return 0


def register_api(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("api", help="run the HTTP API (uvicorn) against the configured broker/store")
    p.add_argument("--host", help="UARNVC_HOST (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="UARNVC_PORT (default 8000)")
    p.add_argument("--data-dir", type=Path, help="UARNVC_DATA_DIR")
    p.set_defaults(func=run_api)


# -------------------------------------------------------------------------------- serve


class WorkerProcess:
    """A `uarnvc worker` child, restarted if it dies (then unfinished jobs are re-queued,
    since the filesystem broker cannot redeliver what a dead worker had taken)."""

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = settings
        self.cmd = [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "--queues",
            "cpu,gpu",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"serve-{os.getpid()}@%h",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-watchdog", daemon=True)

    def start(self) -> None:
        self._spawn(resume=True)
        self._thread.start()

    def _spawn(self, resume: bool) -> None:
        cmd = self.cmd + (["--resume"] if resume else [])
        self.proc = subprocess.Popen(cmd, env=_child_env(self.settings))
        log.info("worker started (pid %d)", self.proc.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            if self.proc is not None and self.proc.poll() is not None:
                log.error("worker exited with %s; restarting it", self.proc.returncode)
                time.sleep(1.0)
                if not self._stopping.is_set():
                    self._spawn(resume=True)

    def stop(self) -> None:
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args)
    _setup_logging(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    host = safe_host(settings.host, settings)
    log.info(
        "embedded service: data in %s, broker %s, store %s, device %s",
        settings.data_dir.resolve(),
        settings.effective_broker_url.split("@")[-1],
        settings.effective_store_url,
        settings.device,
    )
    worker = WorkerProcess(settings, args.concurrency) if not args.no_worker else None
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default
    # handler that kills this process before `finally` runs and orphans the worker. A
    # handler that exits normally lets the worker be stopped below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if worker:
        worker.start()
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=settings.port,
            log_level="info",
            log_config=_uvicorn_log_config(settings),
        )
    finally:
        if worker:
            worker.stop()
    return 0


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the embedded service (API + worker, local store, no servers needed)"
    )
    p.add_argument("--host", help="default 127.0.0.1 (kept there unless API keys are set)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--data-dir", type=Path, help="where jobs, broker and temp files live")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes")
    p.add_argument("--device", help="torch device for training (default cpu)")
    p.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    p.set_defaults(func=run_serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uarnvc", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (register_serve, register_api, register_worker):
        register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
