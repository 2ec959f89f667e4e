"""Hostile-but-valid media for the probe tests: many frames in a few KB."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def long_tiny_video(path: Path, frames: int, side: int = 16) -> Path:
    """`frames` grey H.264 frames of side x side: a 5000-frame file is about 66 KB."""
    if path.exists():
        return path
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = side
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "40"}
        img = np.full((side, side, 3), 128, np.uint8)
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
