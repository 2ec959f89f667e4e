"""Bjøntegaard deltas on synthetic curves whose answer is known in closed form."""

from __future__ import annotations

import math

import pytest

from bench.bdrate import bd_psnr, bd_rate, bracket

RATES = [0.05, 0.1, 0.2, 0.4, 0.8]
PSNRS = [30.0, 32.5, 34.8, 36.9, 38.7]


def test_identical_curves_are_zero() -> None:
    assert bd_rate(RATES, PSNRS, RATES, PSNRS).value == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr(RATES, PSNRS, RATES, PSNRS).value == pytest.approx(0.0, abs=1e-9)


def test_half_the_rate_is_minus_fifty_percent() -> None:
    half = [r / 2 for r in RATES]
    r = bd_rate(RATES, PSNRS, half, PSNRS)
    assert r.value == pytest.approx(-50.0, abs=1e-6)
    assert r.reason is None and r.interval == (min(PSNRS), max(PSNRS))
    # and the anchor seen from the test side costs twice the bits
    assert bd_rate(half, PSNRS, RATES, PSNRS).value == pytest.approx(100.0, abs=1e-6)
    # shifted by a factor 2 in rate, the overlap is rates [0.05, 0.4]: a gain in PSNR
    assert bd_psnr(RATES, PSNRS, half, PSNRS).value > 1.0


def test_constant_psnr_offset() -> None:
    better = [q + 1.5 for q in PSNRS]
    assert bd_psnr(RATES, PSNRS, RATES, better).value == pytest.approx(1.5, abs=1e-9)
    assert bd_rate(RATES, PSNRS, RATES, better).value < 0


def test_no_overlap_is_none_with_reason() -> None:
    far = [r * 1000 for r in RATES]
    low = [q - 20 for q in PSNRS]
    r = bd_rate(RATES, PSNRS, RATES, low)
    assert r.value is None and r.reason and "overlap" in r.reason
    p = bd_psnr(RATES, PSNRS, far, PSNRS)
    assert p.value is None and p.reason and "overlap" in p.reason


def test_too_few_points_and_non_finite() -> None:
    r = bd_rate(RATES, PSNRS, [0.1], [33.0])
    assert r.value is None and "point" in (r.reason or "")
    # a NaN point is dropped, not propagated
    v = bd_psnr(RATES, PSNRS, [*RATES, 0.3], [*PSNRS, math.nan]).value
    assert v == pytest.approx(0.0, abs=1e-9)


def test_three_points_use_an_exact_quadratic() -> None:
    r3, q3 = RATES[:3], PSNRS[:3]
    assert bd_rate(r3, q3, [x / 2 for x in r3], q3).value == pytest.approx(-50.0, abs=1e-6)


def test_bracket_keeps_the_covering_points() -> None:
    pts = [(r, q) for r, q in zip(RATES, PSNRS, strict=True)]
    # PSNR range 33-35 lies between points 1 and 3: 32.5, 34.8, 36.9 plus one widening
    got = bracket(pts, 33.0, 35.0, axis=1)
    assert (0.1, 32.5) in got and (0.2, 34.8) in got and (0.4, 36.9) in got
    assert len(got) == 4
    assert bracket(pts, 0.0, 10.0, axis=0) == sorted(pts)
