"""`uarnvc encode|decode|info` end to end on a real clip, as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.metrics import psnr_per_frame
from core.video import read_frames

from .codec.conftest import SAMPLES

ARGS = ["--frames", "12", "--width", "64", "--clip-length", "4", "--steps", "25"]
ARGS += ["--params", "8000"]


def uarnvc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    src = SAMPLES / "pens.mp4"
    if not src.exists():
        pytest.skip(f"sample videos not found at {SAMPLES}")
    d = tmp_path_factory.mktemp("cli")
    out, js = d / "pens.uarv", d / "m.json"
    r = uarnvc("encode", str(src), "-o", str(out), *ARGS, "--json", str(js), "-q")
    assert r.returncode == 0, r.stderr
    return src, out, json.loads(js.read_text())


def test_round_trip_keeps_count_size_and_reported_quality(encoded, tmp_path: Path) -> None:
    src, out, report = encoded
    r = uarnvc("decode", str(out), "-o", str(tmp_path / "a.mkv"))
    assert r.returncode == 0, r.stderr
    dec = read_frames(tmp_path / "a.mkv")
    ref = read_frames(src, frames=12, width=64)
    assert dec.shape == ref.shape == (12, 52, 64, 3)
    # The PSNR the tool reported equals one computed here from the decoded file.
    assert abs(float(np.mean(psnr_per_frame(ref, dec))) - report["total"]["psnr"]) < 0.05
    assert report["total"]["bpp"] == pytest.approx(out.stat().st_size * 8 / (12 * 52 * 64))
    assert [c["key"] for c in report["clips"]] == [True, False, False]
    for key in ("psnr", "bits", "bpp", "seconds", "a_k", "steps", "peak_rss_mb"):
        assert key in report["clips"][0]
    # Decoding twice gives identical frames.
    uarnvc("decode", str(out), "-o", str(tmp_path / "b.mkv"))
    np.testing.assert_array_equal(read_frames(tmp_path / "b.mkv"), dec)


def test_partial_decode_and_other_formats(encoded, tmp_path: Path) -> None:
    _, out, _ = encoded
    full = tmp_path / "full.mkv"
    uarnvc("decode", str(out), "-o", str(full))
    r = uarnvc("decode", str(out), "-o", str(tmp_path / "part.mkv"), "--clips", "1:3")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(read_frames(tmp_path / "part.mkv"), read_frames(full)[4:])
    for ext in ("y4m", "mp4"):
        r = uarnvc("decode", str(out), "-o", str(tmp_path / f"v.{ext}"))
        assert r.returncode == 0, r.stderr
        assert len(read_frames(tmp_path / f"v.{ext}")) == 12
    r = uarnvc("decode", str(out), "-o", str(tmp_path / "x.mkv"), "--clips", "2:9")
    assert r.returncode == 1 and "outside" in r.stderr


def test_info_json(encoded) -> None:
    _, out, _ = encoded
    r = uarnvc("info", str(out), "--json")
    info = json.loads(r.stdout)
    assert (info["width"], info["height"], info["frames"], info["num_clips"]) == (64, 52, 12, 3)
    assert info["bytes"] == out.stat().st_size and info["error"] is None


def test_flipped_byte_is_a_clean_error_naming_the_clip(encoded, tmp_path: Path) -> None:
    _, out, report = encoded
    data = bytearray(out.read_bytes())
    pos = report["total"]["header_bytes"] + report["clips"][0]["bytes"] + 20  # inside clip 1
    data[pos] ^= 0x01
    bad = tmp_path / "bad.uarv"
    bad.write_bytes(bytes(data))
    r = uarnvc("decode", str(bad), "-o", str(tmp_path / "x.mkv"))
    assert r.returncode == 1
    assert "clip 1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.mkv").exists()  # nothing half-written
    r = uarnvc("info", str(bad))
    assert r.returncode == 1 and "clip 1" in r.stderr


def test_truncated_stream(encoded, tmp_path: Path) -> None:
    _, out, _ = encoded
    bad = tmp_path / "t.uarv"
    bad.write_bytes(out.read_bytes()[:-10])
    r = uarnvc("decode", str(bad), "-o", str(tmp_path / "x.mkv"))
    assert r.returncode == 1 and "clip 2" in r.stderr and "truncated" in r.stderr


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"just some text\n", "not a readable video"), (b"", "empty")],
)
def test_bad_input_files(tmp_path: Path, content: bytes, match: str) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(content)
    r = uarnvc("encode", str(src), "-o", str(tmp_path / "o.uarv"))
    assert r.returncode == 1 and match in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.uarv").exists()


def test_truncated_video_input(tmp_path: Path) -> None:
    src = SAMPLES / "pens.mp4"
    if not src.exists():
        pytest.skip("samples missing")
    t = tmp_path / "t.mp4"
    t.write_bytes(src.read_bytes()[:50_000])
    r = uarnvc("encode", str(t), "-o", str(tmp_path / "o.uarv"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.uarv")) and not list(tmp_path.glob(".part-*"))


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    r = uarnvc("encode", "x.mp4", "-o", str(tmp_path / "o.uarv"), "--clip-length", "0")
    assert r.returncode == 2 and "clip_length" in r.stderr
    r = uarnvc("encode", "x.mp4", "-o", "o.uarv", "--mode", "bogus")
    assert r.returncode == 2
    r = uarnvc("decode", "/nonexistent.uarv", "-o", str(tmp_path / "x.mkv"))
    assert r.returncode == 1 and "nonexistent" in r.stderr


def test_encode_prints_its_eta_first_and_honours_the_time_limit(tmp_path: Path) -> None:
    """The ETA line comes before any training output, the bars carry a job-level ETA, and
    UARNVC_MAX_ENCODE_SECONDS refuses an encode estimated over it (nothing written)."""
    src = SAMPLES / "pens.mp4"
    if not src.exists():
        pytest.skip(f"sample videos not found at {SAMPLES}")
    env = {**os.environ, "UARNVC_DATA_DIR": str(tmp_path / "data")}
    out = tmp_path / "o.uarv"
    cmd = [sys.executable, "-m", "core.cli", "encode", str(src), "-o", str(out), *ARGS]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    m = re.match(r"ETA (\S+) total, (\S+) per clip \((\d+) clips, 64x52, 25 steps, ", lines[0])
    assert m, lines[0]
    assert m.group(3) == "3"
    assert [i for i, s in enumerate(lines) if s.startswith("  clip ")] == [1, 2, 3]
    assert "job_eta=" in r.stderr  # beside the per-clip bars
    assert len(list((tmp_path / "data" / "calibration").glob("*.json"))) == 1

    out.unlink()
    env["UARNVC_MAX_ENCODE_SECONDS"] = "0.01"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 1
    assert r.stdout.startswith("ETA ") and "cached calibration" in r.stdout
    assert "ETA over 0.0s" in r.stdout
    assert "exceeds UARNVC_MAX_ENCODE_SECONDS" in r.stderr
    assert not out.exists() and list(tmp_path.glob("*.uarv")) == []


def test_a_command_that_fails_to_load_says_so_on_help(monkeypatch) -> None:
    """A broken plugin command (here: one whose import fails) is named on --help, not
    silently missing; the codec commands still work."""
    import core.cli as cli

    class Broken:
        name = "serve"

        def load(self):
            raise ImportError("No module named 'uvicorn'")

    monkeypatch.setattr(cli, "entry_points", lambda group: [Broken()])
    parser = cli.build_parser()
    assert "unavailable commands: serve (ImportError: No module named 'uvicorn')" in (
        parser.format_help()
    )
    assert parser.parse_args(["info", "x.uarv"]).command == "info"
