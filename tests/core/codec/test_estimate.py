"""The encode-time estimate: its arithmetic, its calibration cache and the ETA clock.

How accurate it is against real encodes is bench/estimate.py's job (minutes, not seconds);
here a real calibration runs once, on a tiny model, and everything else is arithmetic."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from core.codec import estimate as E
from core.codec.chain import plan_stream
from core.codec.options import EncodeOptions
from core.video import VideoInfo

INFO = VideoInfo(
    width=96,
    height=64,
    fps=Fraction(25),
    frames=24,
    codec="ffv1",
    pix_fmt="yuv420p",
    frames_exact=True,
)
OPTS = EncodeOptions(width=48, clip_length=4, steps=20, params=6000)
CAL = E.Calibration(
    step=0.01,
    first_step_extra=0.05,
    clip_setup=0.1,
    clip_finish=0.2,
    render_frame=0.01,
    motion=0.3,
    device="cpu:test",
    measured_seconds=1.0,
    measured_at=0.0,
)


def test_estimate_adds_steps_fixed_work_and_motion_per_clip() -> None:
    header = plan_stream(INFO, OPTS)
    assert header.num_clips == 6
    est = E.from_calibration(CAL, header, OPTS)
    fixed = 0.1 + 0.05 + 0.2 + 4 * 0.01
    i_clip = fixed + 20 * 0.01
    assert est.clip_seconds[0] == pytest.approx(i_clip)
    assert est.clip_seconds[1:] == pytest.approx([i_clip + 0.3] * 5)  # P: motion search
    assert est.seconds == pytest.approx(6 * i_clip + 5 * 0.3)
    assert est.key_clips == 1 and est.steps == 20 and est.params > 0
    # Every clip its own I-model: no motion search; groups of 2: every other clip.
    ind = E.from_calibration(CAL, header, OPTS.model_copy(update={"mode": "independent"}))
    assert ind.seconds == pytest.approx(6 * i_clip) and ind.key_clips == 6
    grp = E.from_calibration(CAL, header, OPTS.model_copy(update={"key_interval": 2}))
    assert grp.key_clips == 3 and grp.seconds == pytest.approx(6 * i_clip + 3 * 0.3)
    # Twice the steps: the step part doubles, the rest does not.
    long = E.from_calibration(CAL, header, OPTS.model_copy(update={"steps": 40}))
    assert long.seconds - est.seconds == pytest.approx(6 * 20 * 0.01)
    # A bpp target adds two short trial encodes per clip.
    tgt = E.from_calibration(CAL, header, OPTS.model_copy(update={"target_bpp": 0.5}))
    assert tgt.seconds > est.seconds + 6 * 2 * fixed


def test_calibration_is_measured_once_then_cached_in_process_and_on_disk(
    tmp_path: Path,
) -> None:
    header = plan_stream(INFO, OPTS)
    E.clear_cache()
    cal, cached = E.calibrate(header, OPTS, tmp_path)
    assert not cached
    assert 0 < cal.step < 1 and cal.motion > 0 and cal.render_frame > 0
    assert cal.device == E.device_name("cpu")
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["step"] == cal.step
    again, cached = E.calibrate(header, OPTS, tmp_path)
    assert cached and again is cal
    E.clear_cache()  # a new process: the file answers, nothing is measured
    disk, cached = E.calibrate(header, OPTS, tmp_path)
    assert cached and disk == cal
    # Another frame size is another configuration.
    other = OPTS.model_copy(update={"width": 64})
    _, cached = E.calibrate(plan_stream(INFO, other), other, tmp_path)
    assert not cached and len(list(tmp_path.glob("*.json"))) == 2
    # A stale or unreadable file is measured again.
    files[0].write_text(json.dumps({**json.loads(files[0].read_text()), "measured_at": 0}))
    E.clear_cache()
    _, cached = E.calibrate(header, OPTS, tmp_path)
    assert not cached


def test_alternatives_fit_under_the_limit(tmp_path: Path) -> None:
    header = plan_stream(INFO, OPTS)
    E.clear_cache()
    est = E.estimate(header, OPTS.model_copy(update={"steps": 400}), tmp_path)
    limit = est.seconds * 0.6
    fits = E.alternatives(INFO, OPTS.model_copy(update={"steps": 400}), limit, tmp_path)
    names = [next(iter(f.options)) for f in fits]
    assert "steps" in names and "frames" in names and names[-1] == "device"
    for f in fits[:-1]:
        assert f.seconds is not None and f.seconds <= limit
    assert fits[-1].seconds is None  # a GPU: not estimable on this machine


def test_job_clock_scales_the_rest_by_the_clips_done() -> None:
    clock = E.JobClock([10.0, 10.0, 10.0, 10.0])
    assert clock.remaining() == pytest.approx(40.0)
    clock.clip_started(0, now=0.0)
    clock.progress(0, 0.5)
    assert clock.remaining() == pytest.approx(35.0)
    clock.progress(0, 1.0)
    clock.clip_started(1, now=20.0)  # clip 0 took 20 s: twice its estimate
    assert clock.measured == {0: 20.0}
    assert clock.remaining() == pytest.approx(2 * 30.0)
    clock.clip_done(1, 5.0)  # 25 s for 20 estimated
    assert clock.remaining() == pytest.approx(1.25 * 20.0)


def test_duration() -> None:
    assert E.duration(9.94) == "9.9s"
    assert E.duration(245) == "4m05s"
    assert E.duration(7380) == "2h03m"
    assert E.duration(None) == "?"


def test_a_slow_first_step_ends_the_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large models: one step, the rest modelled, so a 720p estimate is ready in one step."""
    monkeypatch.setattr(E, "SLOW_STEP_SECONDS", 0.0)
    header = plan_stream(INFO, OPTS)
    cal = E.measure(header, OPTS)
    assert cal.clip_finish == 0.0
    assert cal.render_frame == pytest.approx(cal.step / OPTS.preset_values.batch / 3)
    assert cal.first_step_extra == pytest.approx(cal.step / E.FIRST_STEP_SHARE - cal.step)
    est = E.from_calibration(cal, replace(header), OPTS)
    assert est.seconds > header.num_clips * OPTS.effective_steps * cal.step


def test_the_motion_search_frames_match_the_search() -> None:
    from core.codec import motion

    assert E.SEARCH_FRAMES == motion.SEARCH_FRAMES
