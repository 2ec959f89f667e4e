"""Hostile-but-valid media for the probe tests: many frames in a few KB."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.media import grey_h264


def long_tiny_video(path: Path, frames: int, side: int = 16) -> Path:
    """`frames` grey H.264 frames of side x side: a 5000-frame file is about 66 KB."""
    if path.exists():
        return path
    return grey_h264(path, frames, side, side)
