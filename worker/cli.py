"""`uarnvc serve | api | worker`: the service's command-line entry points.

`core/cli.py` discovers these through the entry-point group `uarnvc.commands` (each
`register_*` adds one subparser); `python -m worker.cli ...` runs them without it.

- `serve`  the embedded service: API + one worker subprocess on a `filesystem://`
           broker and a local store under --data-dir; no external servers.
- `api`    the API alone (uvicorn), for scale-out with Redis and S3.
- `worker` a Celery worker for --queues (cpu: split, gpu: encode_clip, hooks: webhooks).
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
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from core.storage import ObjectStore

log = logging.getLogger("uarnvc.service")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _setup_logging(settings: Settings, file: Path | None = None) -> None:
    """Text or JSON lines (UARNVC_LOG_JSON) for this process and the loggers of uvicorn
    and Celery, which propagate to the root logger; into `file` when given."""
    from core.logs import setup_logging

    setup_logging(settings.log_level, settings.log_json, file)


def _uvicorn_log_config(settings: Settings, to_file: bool = False) -> dict | None:
    """None keeps uvicorn from installing its own text handlers, so its access and error
    lines go through our handler (JSON lines, or the log file); otherwise uvicorn's
    default (coloured) config."""
    import uvicorn.config

    return None if settings.log_json or to_file else uvicorn.config.LOGGING_CONFIG


def _lower_priority(settings: Settings) -> None:
    """A worker sharing its host with an API yields the CPU to it (UARNVC_WORKER_NICE),
    and its torch uses at most UARNVC_TORCH_THREADS threads: OMP_NUM_THREADS is read
    when torch initialises, in whichever process trains (solo or a prefork child)."""
    if settings.worker_nice:
        os.nice(settings.worker_nice)
    if settings.torch_threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(settings.torch_threads)


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
    _lower_priority(settings)
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
    from core.queue import make_celery, send
    from core.storage import open_store
    from worker import pipeline

    client = make_celery(settings)

    def enqueue(kind: str, a: list) -> None:
        send(client, kind, a)

    n = pipeline.resume(open_store(settings), enqueue)
    if n:
        log.info("resumed %d unfinished job(s)", n)


def register_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Celery worker (split on cpu, encode_clip on gpu)")
    p.add_argument(
        "--queues", default="cpu,gpu,hooks", help="comma-separated: cpu, gpu, hooks (webhooks)"
    )
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
        access_log=settings.access_log,
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

    def __init__(
        self,
        settings: Settings,
        concurrency: int,
        queues: str = "cpu,gpu,hooks",
        resume: bool = True,
        log_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.resume = resume
        self.log_file = log_file
        self.cmd = [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "--queues",
            queues,
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"serve-{queues.replace(',', '-')}-{os.getpid()}@%h",
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-watchdog", daemon=True)

    def start(self) -> None:
        self._spawn(resume=self.resume)
        self._thread.start()

    def _spawn(self, resume: bool) -> None:
        cmd = self.cmd + (["--resume"] if resume else [])
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                cmd, env=_embedded_worker_env(self.settings), stdout=out, stderr=out
            )
        finally:
            if out is not None:
                out.close()  # the child holds its own descriptor
        log.info("worker %s started (pid %d)", self.cmd[5], self.proc.pid)

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


def _embedded_worker_env(settings: Settings) -> dict[str, str]:
    """The embedded workers share the CPU with the API: unless configured otherwise they
    run at niceness 10 with all cores but one for torch, so training never starves the
    API's event loop (docs/service.md, "Load")."""
    env = _child_env(settings)
    if "worker_nice" not in settings.model_fields_set:
        env["UARNVC_WORKER_NICE"] = "10"
    if "torch_threads" not in settings.model_fields_set:
        env["UARNVC_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 2) - 1))
    return env


class Console:
    """What `serve` prints for people: one line per clip done (PSNR, bpp) and per job
    finished, read from the store once a second; the logs go to the log file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.printed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from core.storage import open_store

        store = open_store(self.settings)
        first = True
        while not self._stop.wait(1.0):
            try:
                self._show(store, quiet=first)
                first = False
            except Exception:  # never let the display take the service down
                log.debug("console update failed", exc_info=True)

    def _show(self, store: ObjectStore, quiet: bool = False) -> None:
        """Print what is new; `quiet`: remember jobs that ended before this start."""
        from core.jobs import TERMINAL
        from core.status import job_status

        for entry in store.list("active/"):
            job_id = entry.rsplit("/", 1)[-1]
            if self.printed.get(job_id, 0) < 0:
                continue  # finished and printed
            st = job_status(store, job_id)
            if st is None:
                continue
            if quiet and st.status in TERMINAL:
                self.printed[job_id] = -1
                continue
            done = self.printed.get(job_id, 0)
            for c in st.clips[done:]:
                if c.status != "done":
                    break
                psnr = f"{c.psnr:.2f} dB" if c.psnr is not None else "? dB"
                bpp = f"{c.bpp:.4f} bpp" if c.bpp is not None else "? bpp"
                print(
                    f"job {job_id[:8]}  clip {c.index + 1}/{st.clips_total}  {psnr}  {bpp}",
                    flush=True,
                )
                done += 1
            self.printed[job_id] = done
            if st.status in TERMINAL:
                psnr = f"{st.psnr:.2f} dB" if st.psnr is not None else "-"
                print(f"job {job_id[:8]}  {st.status}  {psnr}", flush=True)
                self.printed[job_id] = -1


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file: Path | None = None
    if not args.verbose:
        log_file = Path(args.log_file or settings.data_dir / "logs" / "serve.log").resolve()
        log_file.parent.mkdir(parents=True, exist_ok=True)
    _setup_logging(settings, log_file)
    host = safe_host(settings.host, settings)
    log.info(
        "embedded service: data in %s, broker %s, store %s, device %s",
        settings.data_dir.resolve(),
        settings.effective_broker_url.split("@")[-1],
        settings.effective_store_url,
        settings.device,
    )
    workers: list[WorkerProcess] = []
    if not args.no_worker:
        # Two processes, so the split of one job runs ahead while its clips train: the
        # first clip is published long before a long video is split (docs/service.md).
        workers = [
            WorkerProcess(settings, 1, "cpu,hooks", resume=True, log_file=log_file),
            WorkerProcess(settings, args.concurrency, "gpu", resume=False, log_file=log_file),
        ]
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default
    # handler that kills this process before `finally` runs and orphans the worker. A
    # handler that exits normally lets the worker be stopped below.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    for w in workers:
        w.start()
    console = Console(settings)
    console.start()
    print(f"uarnvc serve: http://{host}:{settings.port}/  (data in {settings.data_dir})")
    if log_file is not None:
        print(f"logs: {log_file}  (--verbose for the console)", flush=True)
    try:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=settings.port,
            log_level="info",
            log_config=_uvicorn_log_config(settings, to_file=log_file is not None),
            access_log=settings.access_log,
        )
    finally:
        console.stop()
        for w in workers:
            w.stop()
    return 0


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the embedded service (API + worker, local store, no servers needed)"
    )
    p.add_argument("--host", help="default 127.0.0.1 (kept there unless API keys are set)")
    p.add_argument("--port", type=int, help="default 8000")
    p.add_argument("--data-dir", type=Path, help="where jobs, broker and temp files live")
    p.add_argument("--concurrency", type=int, default=1, help="training worker processes")
    p.add_argument("--device", help="torch device for training (default cpu)")
    p.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    p.add_argument("--verbose", "-v", action="store_true", help="server logs on the console")
    p.add_argument("--log-file", type=Path, help="default DATA_DIR/logs/serve.log")
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
