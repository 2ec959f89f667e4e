from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from core.video import (
    VideoError,
    iter_clips,
    probe,
    read_frames,
    scaled_size,
    write_video,
)

from .codec.conftest import SAMPLES


@pytest.fixture(scope="module")
def pens() -> Path:
    p = SAMPLES / "pens.mp4"
    if not p.exists():
        pytest.skip(f"sample videos not found at {SAMPLES}")
    return p


def test_probe_real_clip(pens: Path) -> None:
    info = probe(pens)
    assert (info.width, info.height, info.frames, info.codec) == (176, 144, 64, "h264")
    assert 29 < float(info.fps) < 30


def test_read_with_frames_and_odd_width(pens: Path) -> None:
    x = read_frames(pens, frames=5, width=91)
    assert x.shape == (5, 74, 91, 3) and x.dtype == np.uint8
    assert scaled_size(176, 144, 500) == (176, 144)  # never upscale


def test_clips_stream_in_order(pens: Path) -> None:
    clips = list(iter_clips(pens, 6, frames=20, width=32))
    assert [len(c) for c in clips] == [6, 6, 6, 2]
    np.testing.assert_array_equal(np.concatenate(clips), read_frames(pens, frames=20, width=32))


def test_mkv_is_lossless_and_other_formats_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 13, 17, 3), dtype=np.uint8)  # odd sizes, noise
    write_video(tmp_path / "a.mkv", frames, Fraction(25))
    np.testing.assert_array_equal(read_frames(tmp_path / "a.mkv"), frames)
    for ext in (".y4m", ".mp4"):
        write_video(tmp_path / f"a{ext}", frames, Fraction(25))
        assert probe(tmp_path / f"a{ext}").frames == 4


def test_unsupported_output_format(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="unsupported output format"):
        write_video(tmp_path / "a.avi", np.zeros((1, 8, 8, 3), np.uint8), Fraction(25))


def _writer(content: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return make


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_writer(b"hello, not a video"), "not a readable video"),
        (_writer(b""), "empty"),
        (_writer(np.random.default_rng(0).bytes(5000)), "not a readable"),
        (_audio_only, "no video stream"),
    ],
)
def test_bad_inputs_raise_clear_errors(tmp_path: Path, make, match: str) -> None:
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match=match):
        probe(path)


def test_truncated_video(tmp_path: Path, pens: Path) -> None:
    data = pens.read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError):
        probe(tmp_path / "t.mp4")


def test_missing_file() -> None:
    with pytest.raises(VideoError, match="no such file"):
        probe("/nonexistent/video.mp4")
