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
from typing import Any

from pydantic import ValidationError

from core.codec.bitstream import BitstreamError
from core.codec.entropy import EntropyError
from core.video import VideoError

log = logging.getLogger("uarnvc")

ENCODE_FLAGS: dict[str, dict[str, Any]] = {
    # flag: argparse kwargs; dest = EncodeOptions field (alias `lambda` -> lam)
    "--mode": {"choices": ["uar", "independent", "whole"], "help": "default uar"},
    "--clip-length": {"type": int, "help": "frames per clip: the latency knob (default 16)"},
    "--preset": {"choices": ["fast", "medium", "slow"], "help": "default fast"},
    "--lambda": {"type": float, "dest": "lam", "help": "rate weight in MSE + lambda*bpp"},
    "--params": {"type": int, "help": "parameters per clip model (default from preset)"},
    "--steps": {"type": int, "help": "training steps per clip (default from preset)"},
    "--key-interval": {"type": int, "help": "clips per group of models; 0: scene cuts only"},
    "--frames": {"type": int, "help": "encode only the first N frames"},
    "--width": {"type": int, "help": "downscale to this width, keeping the aspect ratio"},
    "--seed": {"type": int},
    "--device": {"help": "cpu or cuda[:N]"},
    "--backbone": {"choices": ["gridwarp", "grid", "nerv"]},
}


def add_encode_options(p: argparse.ArgumentParser) -> None:
    """The encode knobs, shared by `encode` and the service client."""
    for flag, kw in ENCODE_FLAGS.items():
        p.add_argument(flag, default=None, **kw)


def encode_options_from_args(args: argparse.Namespace) -> Any:
    from core.codec.options import EncodeOptions

    values = {}
    for flag, kw in ENCODE_FLAGS.items():
        dest = kw.get("dest", flag[2:].replace("-", "_"))
        v = getattr(args, dest, None)
        if v is not None:
            values[dest] = v
    return EncodeOptions(**values)


# ---------------------------------------------------------------------------- commands


def _cmd_encode(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.codec.encoder import Progress
    from core.codec.pipeline import encode_file

    opts = encode_options_from_args(args)
    bars: list[tqdm] = []

    def clip_progress(k: int, n: int) -> Progress:
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
            bar.total = total
            bar.update(i - bar.n)
            if i % 25 == 0 or i == total:
                bar.set_postfix(mse=f"{loss:.2e}")
            if i == total:
                bar.close()

        return step

    def on_clip(res: Any) -> None:
        m = res.metrics
        if not args.quiet:
            motion = m.get("motion")
            moved = (
                f" camera moved {motion['corner_px']:.1f} px (warp trained)"
                if motion and motion["warp_trained"]
                else ""
            )
            tqdm.write(
                f"  clip {m['index']}: {'I' if m['key'] else 'P'} a={m['a_k']:.2f} "
                f"{m['psnr']:.2f} dB {m['bpp']:.4f} bpp {m['bytes']} B {m['seconds']:.1f} s" + moved
            )

    report = encode_file(
        args.input, args.output, opts, clip_progress=clip_progress, on_clip=on_clip
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
    from core.codec.pipeline import decode_file

    r = decode_file(args.input, args.output, args.clips, args.device)
    print(f"{r['output']}: {r['frames']} frames (clips {r['clips'][0]}:{r['clips'][1]})")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from core.codec.pipeline import stream_info

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

    for ep in entry_points(group="uarnvc.commands"):
        try:
            ep.load()(sub)
        except Exception as e:  # a broken plugin must not take the codec commands down
            log.debug("command %s unavailable: %s", ep.name, e)
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
