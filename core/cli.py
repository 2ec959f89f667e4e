"""`uarnvc`: the codec commands (encode, decode, info) plus those other packages register.

Service commands (serve, api, worker, ...) live with the service and are discovered through
the entry-point group `uarnvc.commands`, so `core` never imports `api` or `worker`.
Exit status: 0 ok, 1 bad input (a message on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from core.codec.bitstream import BitstreamError
from core.codec.entropy import EntropyError
from core.codec.options import BackboneNames
from core.video import VideoError

log = logging.getLogger("uarnvc")


def _encode_flags() -> dict[str, dict[str, Any]]:
    """flag -> argparse kwargs, derived from EncodeOptions' fields (core/codec/options.py):
    the type, choices, help and default shown come from the one definition."""
    from core.codec.options import CALLER_OPTIONS, EncodeOptions

    flags: dict[str, dict[str, Any]] = {}
    for name in CALLER_OPTIONS:
        info = EncodeOptions.model_fields[name]
        flag = "--" + (info.alias or name).replace("_", "-")
        kw: dict[str, Any] = {"dest": name, "help": info.description or ""}
        kind = info.annotation
        if get_origin(kind) in (Union, UnionType):  # X | None: the X
            kind = next(a for a in get_args(kind) if a is not type(None))
        if get_origin(kind) is Literal:
            kw["choices"] = list(get_args(kind))
        elif kind in (int, float):
            kw["type"] = kind
        if name == "backbone":  # the registry, loaded only when the flag is used
            kw.update(choices=BackboneNames(), metavar="NAME")
            kw["help"] += ": %(choices)s"
        if info.default is not None:
            kw["help"] += (
                f" (default {info.default:g})"
                if isinstance(info.default, float)
                else f" (default {info.default})"
            )
        flags[flag] = kw
    return flags


ENCODE_FLAGS = _encode_flags()


def add_encode_options(p: argparse.ArgumentParser) -> None:
    """The encode knobs, shared by `encode` and the service client."""
    for flag, kw in ENCODE_FLAGS.items():
        p.add_argument(flag, default=None, **kw)


def encode_options_from_args(args: argparse.Namespace) -> Any:
    from core.codec.options import EncodeOptions

    values = {}
    for kw in ENCODE_FLAGS.values():
        dest = kw["dest"]
        v = getattr(args, dest, None)
        if v is not None:
            values[dest] = v
    return EncodeOptions(**values)


# ---------------------------------------------------------------------------- commands


def _flag(fit: Any) -> str:
    """A Fit as the flag that makes it: `--width 640 (~25m00s)`."""
    from core.codec.estimate import duration

    ((name, value),) = fit.options.items()
    when = "a GPU" if fit.seconds is None else f"~{duration(fit.seconds)}"
    return f"--{name.replace('_', '-')} {value} ({when})"


def eta_line(est: Any) -> str:
    """The one `ETA` line printed before training (its format is what tests read)."""
    from core.codec.estimate import duration

    cal = est.calibration
    how = "cached calibration" if est.cached else f"calibrated in {cal.measured_seconds:.1f}s"
    return (
        f"ETA {duration(est.seconds)} total, {duration(est.per_clip)} per clip "
        f"({est.clips} clips, {est.width}x{est.height}, {est.steps} steps, {est.params} "
        f"parameters; a step takes {1000 * cal.step:.1f} ms on {cal.device}, {how})"
    )


def _announce(args: argparse.Namespace, opts: Any) -> Any:
    """Estimate the encode, print the ETA line (and what would fit when it is long);
    None when UARNVC_MAX_ENCODE_SECONDS refuses it."""
    from core.codec.chain import plan_stream
    from core.codec.estimate import HOUR, alternatives, duration, estimate
    from core.settings import get_settings
    from core.video import probe

    settings = get_settings()
    info = probe(args.input)
    est = estimate(plan_stream(info, opts), opts, settings.calibration_dir)
    print(eta_line(est), flush=True)
    limit = settings.cli_max_encode_seconds
    bound = min(limit, HOUR) if limit else HOUR
    if est.seconds > bound:
        fits = alternatives(info, opts, bound, settings.calibration_dir)
        what = "over an hour" if bound == HOUR else f"over {duration(bound)}"
        fix = "; to fit: " + ", ".join(_flag(f) for f in fits) if fits else ""
        print(f"ETA {what}{fix}", flush=True)
    if limit and est.seconds > limit:
        print(
            f"uarnvc encode: error: the estimate {duration(est.seconds)} exceeds "
            f"UARNVC_MAX_ENCODE_SECONDS ({duration(limit)})",
            file=sys.stderr,
        )
        return None
    return est


def _cmd_encode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.codec.estimate import JobClock, duration
    from core.codec.files import encode_file
    from core.codec.fit import Progress

    opts = encode_options_from_args(args)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    est = _announce(args, opts)
    if est is None:
        return 1
    clock = JobClock(est.clip_seconds)
    bars: list[tqdm] = []

    def clip_progress(k: int, n: int) -> Progress:
        clock.clip_started(k)
        bar = tqdm(
            total=1,
            desc=f"clip {k + 1}/{n}",
            unit="step",
            leave=True,
            disable=args.quiet,
            mininterval=0.5,
        )
        bars.append(bar)

        def step(i: int, total: int, loss: float) -> None:
            clock.progress(k, i / max(1, total))
            bar.total = total
            bar.update(i - bar.n)
            if i % 25 == 0 or i == total:
                bar.set_postfix(mse=f"{loss:.2e}", job_eta=duration(clock.remaining()))
            if i == total:
                bar.close()

        return step

    def on_clip(res: Any) -> None:
        m = res.metrics.model_dump()
        clock.clip_done(m["index"], m["seconds"])
        if not args.quiet:
            motion = m.get("motion")
            moved = (
                f" camera moved {motion['corner_px']:.1f} px (warp trained)"
                if motion and motion["warp_trained"]
                else ""
            )
            tqdm.write(
                f"  clip {m['index']}: {'I' if m['key'] else 'P'} a={m['a_k']:.2f} "
                f"q={m['quality']:.1f} "
                f"{m['psnr']:.2f} dB {m['bpp']:.4f} bpp {m['bytes']} B {m['seconds']:.1f} s" + moved
            )

    report = encode_file(
        args.input, args.output, opts, jobs=args.jobs, clip_progress=clip_progress, on_clip=on_clip
    )
    t = report["total"]
    print(
        f"{args.output}: {report['frames']} frames {report['width']}x{report['height']}, "
        f"{len(report['clips'])} clips, {t['psnr']:.2f} dB, {t['bpp']:.4f} bpp, "
        f"{t['bytes']} bytes, {t['seconds']:.1f} s, peak RSS {t['peak_rss_mb']:.0f} MB"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _cmd_decode(args: argparse.Namespace) -> int:
    from core.codec.files import decode_file

    r = decode_file(args.input, args.output, args.clips, args.device)
    print(f"{r['output']}: {r['frames']} frames (clips {r['clips'][0]}:{r['clips'][1]})")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from core.codec.files import stream_info

    info = stream_info(args.input)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"{args.input}: .uarv v{info['version']} {info['width']}x{info['height']} "
            f"@ {info['fps']:.3f} fps, {info['frames']} frames, mode {info['mode']}, "
            f"clip length {info['clip_length']}, {info['num_clips']} clips, "
            f"{info['bytes']} bytes ({info['bpp']:.4f} bpp), backbone {info['backbone']['name']} "
            f"channels {info['backbone']['channels']}"
        )
        for c in info["clips"]:
            print(
                f"  clip {c['index']:4d}  frames {c['first_frame']}+{c['frames']}  "
                f"{'I' if c['key'] else 'P'}  a={c['a_k']:.2f}  {c['bytes']:8d} B  "
                f"zero layers {c['zero_layers']}/{c['layers']}"
            )
    if info["error"]:
        print(f"error: {info['error']}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uarnvc", description="Autoregressive INR video compression (UAR-NVC)."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="encode a video to .uarv")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    add_encode_options(p)
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="independent groups of models (see --key-interval) trained at once on the "
        "device; the bytes do not depend on it (default 1)",
    )
    p.add_argument("--json", metavar="METRICS.json", help="write per-clip and total metrics")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("decode", help="decode .uarv to .mkv (lossless RGB), .y4m or .mp4")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--clips", metavar="A:B", help="decode only clips A..B-1")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_decode)

    p = sub.add_parser("info", help="show a .uarv's header and clips (validates CRCs)")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    broken = []
    for ep in entry_points(group="uarnvc.commands"):
        try:
            ep.load()(sub)
        except Exception as e:  # a broken plugin must not take the codec commands down
            broken.append(f"{ep.name} ({type(e).__name__}: {e})")
    if broken:  # shown on --help, so a command that vanished says why
        parser.epilog = "unavailable commands: " + "; ".join(broken)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (VideoError, BitstreamError, EntropyError, FileNotFoundError, IsADirectoryError) as e:
        print(f"uarnvc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except ValidationError as e:
        msgs = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        print(f"uarnvc {args.command}: invalid option: {msgs}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"uarnvc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
