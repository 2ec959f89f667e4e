"""Decode a .uarv to a lossless .mkv in a fresh process (what a remote client would do)."""

from __future__ import annotations

import sys

from core.codec.bitstream import read_stream
from core.codec.chain import decode_clip
from core.video import VideoWriter


def main(src: str, dst: str) -> int:
    with open(src, "rb") as f:
        header, chunks = read_stream(f)
        state = None
        with VideoWriter(dst, header.fps, ".mkv") as w:
            for chunk in chunks:
                frames, state = decode_clip(header, chunk, state)
                w.write(frames)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
