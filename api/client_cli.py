"""`uarnvc submit | status | fetch`: the service from a terminal, through `api.client`.

    uarnvc submit clip.mp4 --clip-length 8 --wait -o out.uarv   # a bar per clip
    uarnvc status                       # your jobs
    uarnvc status JOB                   # one job, clip by clip
    uarnvc fetch JOB -o out.uarv        # or out.mkv / .y4m / .mp4 (decoded by the server)

Registered through the entry-point group `uarnvc.commands`. The server and key come from
--server/--api-key or UARNVC_SERVER/UARNVC_API_KEY. Exit status: 0 ok, 1 the job failed
or the server refused (the problem's text on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from api.client import ApiError, Event, UarnvcClient
from core.cli import ENCODE_FLAGS, add_encode_options
from core.jobs import TERMINAL, JobStatus

SERVER_ONLY = {"device", "backbone"}  # the service's workers decide these
DECODED = {".mkv": "mkv", ".y4m": "y4m", ".mp4": "mp4"}


class UsageError(ValueError):
    """A flag that makes no sense for the service (exit status 2)."""


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="API base URL (UARNVC_SERVER; default http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="bearer key (UARNVC_API_KEY)")


def _client(args: argparse.Namespace) -> UarnvcClient:
    return UarnvcClient(args.server, args.api_key)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The encode flags the user gave, as the API's form fields (`--lambda` -> lambda)."""
    out: dict[str, Any] = {}
    for flag, kw in ENCODE_FLAGS.items():
        dest = kw.get("dest", flag[2:].replace("-", "_"))
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest in SERVER_ONLY:
            raise UsageError(f"{flag} is chosen by the server's workers")
        out["lambda" if dest == "lam" else dest] = value
    return out


def _run(command: str, fn: Callable[[], int]) -> int:
    """Errors as one line on stderr: the server's problem text, or why it is unreachable."""
    try:
        return fn()
    except ApiError as e:
        print(f"uarnvc {command}: {e}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:
        print(f"uarnvc {command}: cannot reach the server: {e}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"uarnvc {command}: {e}", file=sys.stderr)
        return 1


def _fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def _summary(st: JobStatus) -> str:
    from core.codec.estimate import duration

    err = f"  error {st.error.code}: {st.error.detail}" if st.error else ""
    eta = "" if st.status in TERMINAL else f"  ETA {_eta(st.eta_seconds)}"
    started = f"  started {st.started_at:%Y-%m-%d %H:%M:%S}" if st.started_at else ""
    est = f" (estimated {duration(st.estimate_seconds)})" if st.estimate_seconds else ""
    return (
        f"{st.id}  {st.status}  {st.clips_done}/{st.clips_total} clips  {st.progress:.0f}%  "
        f"{_fmt(st.psnr, '.2f', ' dB')}  {_fmt(st.bpp, '.4f', ' bpp')}  {st.bytes} B"
        f"{eta}{started}{est}{err}"
    )


def _eta(seconds: float | None) -> str:
    from core.codec.estimate import duration

    return "–" if seconds is None else duration(seconds)


# ---------------------------------------------------------------------------- submit


class ClipBars:
    """One tqdm bar per clip, fed by the SSE events (clip_progress, clip_done)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self.tqdm, self.total, self.quiet = tqdm, total, quiet
        self.bars: dict[int, Any] = {}

    def _bar(self, k: int) -> Any:
        if k not in self.bars:
            for j in [j for j in self.bars if j < k]:  # earlier clips are done by now
                self.bars[j].close()
            self.bars[k] = self.tqdm(
                total=100,
                desc=f"clip {k + 1}/{self.total}",
                unit="%",
                leave=True,
                disable=self.quiet,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}",
            )
        return self.bars[k]

    def __call__(self, ev: Event) -> None:
        d = ev.data
        if ev.event == "clip_progress":
            bar = self._bar(int(d["index"]))
            bar.update(round(100 * float(d["progress"])) - bar.n)
        elif ev.event == "clip_done":
            bar = self._bar(int(d["index"]))
            bar.update(100 - bar.n)
            bar.set_postfix_str(
                f"{_fmt(d.get('psnr'), '.2f', ' dB')} {_fmt(d.get('bpp'), '.4f', ' bpp')} "
                f"{d.get('bytes')} B"
            )
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)
    except UsageError as e:
        print(f"uarnvc submit: {e}", file=sys.stderr)
        return 2

    def run() -> int:
        from tqdm import tqdm

        with _client(args) as c:
            size = Path(args.input).stat().st_size
            with tqdm(
                total=size, unit="B", unit_scale=True, desc="upload", disable=args.quiet
            ) as up:
                job = c.submit(
                    args.input,
                    opts,
                    idempotency_key=args.idempotency_key,
                    on_upload=lambda n, _t: up.update(n - up.n),
                    webhook_url=args.webhook_url,
                )
            print(job.id if args.quiet else f"job {job.id} accepted ({job.clips_total} clips)")
            if not (args.wait or args.output):
                return 0
            bars = ClipBars(job.clips_total, args.quiet)
            try:
                final = c.wait(job.id, on_event=bars)
            finally:
                bars.close()
            if not args.quiet:
                print(_summary(final))
            if args.json:
                print(final.model_dump_json(indent=2))
            if final.status != "succeeded":
                print(f"uarnvc submit: job {job.id} {final.status}", file=sys.stderr)
                return 1
            if args.output:
                n = _fetch_to(c, job.id, Path(args.output))
                if not args.quiet:
                    print(f"{args.output}: {n} bytes")
            return 0

    return _run("submit", run)


def register_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="upload a video to the service and (optionally) wait")
    p.add_argument("input")
    _add_server_options(p)
    add_encode_options(p)
    for action in p._actions:  # shared flags the service does not take: hidden, refused
        if action.dest in SERVER_ONLY:
            action.help = argparse.SUPPRESS
    p.add_argument("--wait", action="store_true", help="follow the job with a bar per clip")
    p.add_argument(
        "-o", "--output", help="when done, save OUT.uarv (or .mkv/.y4m/.mp4); implies --wait"
    )
    p.add_argument("--idempotency-key", help="retrying with the same key never makes two jobs")
    p.add_argument("--webhook-url", help="POST clip.done, job.succeeded, job.failed here (signed)")
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no bars; print the job id only")
    p.set_defaults(func=cmd_submit)


# ---------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    def run() -> int:
        with _client(args) as c:
            if not args.job:
                jobs = list(c.jobs())
                if args.json:
                    print(json.dumps(jobs, indent=2))
                for j in [] if args.json else jobs:
                    print(
                        f"{j['id']}  {j['status']:<9}  {j['clips_done']}/{j['clips_total']}  "
                        f"{j['progress']:5.1f}%  {_fmt(j.get('psnr'), '.2f', ' dB')}  "
                        + ("" if j["status"] in TERMINAL else f"ETA {_eta(j.get('eta_seconds'))}  ")
                        + f"{j.get('filename') or ''}"
                    )
                return 0
            st = c.status(args.job)
            if args.json:
                print(st.model_dump_json(indent=2))
                return 0
            print(_summary(st))
            for clip in st.clips:
                extra = ""
                if clip.status == "done":
                    extra = (
                        f"{_fmt(clip.psnr, '.2f', ' dB')}  {_fmt(clip.bpp, '.4f', ' bpp')}  "
                        f"{clip.bytes} B  {_fmt(clip.seconds, '.1f', ' s')}"
                    )
                elif clip.status == "running":
                    extra = f"{100 * (clip.progress or 0):.0f}%"
                print(f"  clip {clip.index:4d}  {clip.status:<7}  {extra}")
            return 0

    return _run("status", run)


def register_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="a job's status and clips (no JOB: your jobs)")
    p.add_argument("job", nargs="?")
    _add_server_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


# ----------------------------------------------------------------------------- fetch


def _fetch_to(c: UarnvcClient, job: str, out: Path) -> int:
    ext = out.suffix.lower()
    if ext in DECODED:
        return c.fetch_decoded(job, out, DECODED[ext])  # type: ignore[arg-type]
    return c.fetch_bitstream(job, out)


def cmd_fetch(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in {".uarv", *DECODED}:
        print("uarnvc fetch: -o must end in .uarv, .mkv, .y4m or .mp4", file=sys.stderr)
        return 2

    def run() -> int:
        with _client(args) as c:
            n = _fetch_to(c, args.job, out)
        print(f"{out}: {n} bytes")
        return 0

    return _run("fetch", run)


def register_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch", help="download a job's .uarv (or its decoded .mkv/.y4m/.mp4); waits for the end"
    )
    p.add_argument("job")
    p.add_argument("-o", "--output", required=True, help="OUT.uarv | OUT.mkv | OUT.y4m | OUT.mp4")
    _add_server_options(p)
    p.set_defaults(func=cmd_fetch)
