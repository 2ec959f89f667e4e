"""Shared codec fixtures: a real clip and one tiny stream encoded from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.codec.options import EncodeOptions

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO.parent / "shared" / "data"
PENS = SAMPLES / "pens.mp4"

# Small enough for 2 CPU cores, big enough to exercise I- and P-clips and II.
TINY = EncodeOptions(width=48, frames=12, clip_length=4, steps=25, params=6000, seed=3)


@pytest.fixture(scope="session")
def pens() -> Path:
    if not PENS.exists():
        pytest.skip(f"sample videos not found at {SAMPLES} (../shared/data beside the repo)")
    return PENS


@pytest.fixture(scope="session")
def tiny_stream(pens: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(path, report) of pens encoded with TINY: 3 clips, one I and two P."""
    from core.codec.files import encode_file

    out = tmp_path_factory.mktemp("codec") / "pens.uarv"
    report = encode_file(pens, out, TINY)
    return out, report
