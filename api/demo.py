"""`uarnvc demo [INPUT]`: the whole product on one machine, in one command.

Starts the embedded service (`uarnvc serve`: API + worker, local store, no servers),
uploads INPUT (or a sample it renders on the spot), follows the clips with a bar each,
downloads the `.uarv`, decodes it locally with the codec and checks the PSNR the service
reported against the decoded frames. With --keep-serving the service stays up so the
page at http://127.0.0.1:PORT/ can be explored.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np

from api.client import UarnvcClient
from api.client_cli import ClipBars, _summary


def render_sample(path: Path, frames: int = 48, width: int = 160, height: int = 96) -> Path:
    """A textured scene with a slow pan and a moving object: something an INR can learn
    and whose clips are correlated, made here so no sample is downloaded or shipped."""
    import av

    from core.video import write_video

    rng = np.random.default_rng(7)
    pan = frames // 2 + 1  # the background moves one pixel every two frames
    small = rng.integers(30, 225, (height // 12 + 1, (width + pan) // 12 + 1, 3), np.uint8)
    big = (
        av.VideoFrame.from_ndarray(small, format="rgb24")
        .reformat(width=width + pan, height=height, interpolation="BICUBIC")
        .to_ndarray()
        .astype(np.float32)
    )
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        img = big[:, t // 2 : t // 2 + width].copy()
        cx, cy = 20 + 2 * t, height / 2 + 20 * np.sin(t / 8)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < 14**2] = (230, 60, 40)
        out[t] = img.clip(0, 255).astype(np.uint8)
    write_video(path, out, Fraction(25))
    return path


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`uarnvc serve` exited with status {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the service did not become ready at {url} in {timeout:.0f} s")


def run_demo(args: argparse.Namespace) -> int:
    from core.codec.files import decode_file
    from core.metrics import psnr_per_frame
    from core.video import read_frames

    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    src = Path(args.input) if args.input else render_sample(data / "sample.mkv")
    url = f"http://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "worker.cli", "serve", "--port", str(args.port)]
    cmd += ["--data-dir", str(data)]
    log_file = data / "logs" / "serve.log"
    if args.verbose:
        proc = subprocess.Popen([*cmd, "--verbose"])
    else:
        # The service's logs (uvicorn, Celery, ours) go to a file: the console keeps the
        # bars and the results only.
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log_out:
            proc = subprocess.Popen(
                [*cmd, "--log-file", str(log_file)], stdout=log_out, stderr=subprocess.STDOUT
            )
    try:
        _wait_healthy(url, proc)
        print(f"service up at {url}/ (data in {data}); encoding {src}")
        if not args.verbose:
            print(f"server logs: {log_file} (--verbose to see them here)")
        opts = {"clip_length": args.clip_length, "preset": args.preset}
        opts |= {k: v for k, v in (("frames", args.frames), ("width", args.width)) if v}
        with UarnvcClient(url, api_key="") as c:
            job = c.submit(src, opts)
            print(f"job {job.id}: {job.clips_total} clips; watch it at {url}/")
            bars = ClipBars(job.clips_total, quiet=False)
            try:
                final = c.wait(job.id, on_event=bars)
            finally:
                bars.close()
            print(_summary(final))
            if final.status != "succeeded":
                print(f"job {final.status}: {final.error}", file=sys.stderr)
                return 1
            out = data / f"{job.id}.uarv"
            c.fetch_bitstream(job.id, out)
        mkv = out.with_suffix(".mkv")
        decode_file(out, mkv)
        dec = read_frames(mkv)
        ref = read_frames(src, frames=len(dec), width=args.width)
        psnr = float(np.mean(psnr_per_frame(ref, dec)))
        print(
            f"{out} ({out.stat().st_size} bytes) decoded locally to {mkv}: {len(dec)} frames, "
            f"{psnr:.2f} dB (service reported {final.psnr:.2f} dB)"
        )
        if args.keep_serving:
            print(f"serving at {url}/ until Ctrl-C")
            proc.wait()
        return 0
    except KeyboardInterrupt:
        return 130
    except RuntimeError as e:  # the service did not start: say why, no traceback
        where = "" if args.verbose else f" (see {log_file})"
        print(f"uarnvc demo: {e}{where}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def register_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="start the embedded service and encode a sample end to end")
    p.add_argument("input", nargs="?", help="your video (default: a sample rendered here)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--preset", default="fast", choices=["fast", "medium", "slow"])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--keep-serving", action="store_true", help="leave the service running")
    p.add_argument("--verbose", "-v", action="store_true", help="server logs on the console")
    p.set_defaults(func=run_demo)
