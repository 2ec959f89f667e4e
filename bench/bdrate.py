"""Bjøntegaard delta rate (BD-rate, %) and delta PSNR (BD-PSNR, dB) between two RD curves.

The classic VCEG-M33 method: fit a cubic polynomial of PSNR against log10(rate) (and of
log10(rate) against PSNR), integrate both fits over the interval where the two curves
overlap, and compare the mean values. Curves with fewer than four points are fitted with
a polynomial of degree ``points - 1`` (a cubic needs four points; three give the exact
quadratic), which is what most tools do for short sweeps. When the curves share no
interval the delta is undefined: we return ``None`` with the reason instead of
extrapolating, because an extrapolated BD number is the usual way these tables lie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 2


@dataclass(frozen=True)
class BDResult:
    """One Bjøntegaard delta; ``value`` is None when it is undefined (see ``reason``)."""

    value: float | None
    reason: str | None = None
    interval: tuple[float, float] | None = None  # the overlap integrated over

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "reason": self.reason,
            "interval": list(self.interval) if self.interval else None,
        }


def _clean(rate: Sequence[float], psnr: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | str:
    """Finite, positive-rate points sorted by rate; a reason string if too few remain."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(psnr, dtype=np.float64)
    if r.shape != q.shape:
        return f"rate and PSNR lengths differ ({r.size} vs {q.size})"
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    if r.size < MIN_POINTS:
        return f"only {r.size} usable point(s); need {MIN_POINTS}"
    order = np.argsort(r)
    return r[order], q[order]


def _mean_of_fit(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Mean value over [lo, hi] of the polynomial fitted to y(x) (degree <= 3)."""
    deg = min(3, x.size - 1)
    poly = np.polynomial.Polynomial.fit(x, y, deg).convert()
    integral = poly.integ()
    return float((integral(hi) - integral(lo)) / (hi - lo))


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float] | str:
    lo = max(a.min(), b.min())
    hi = min(a.max(), b.max())
    if hi <= lo:
        return (
            f"no overlap in {what}: [{a.min():.4g}, {a.max():.4g}] "
            f"vs [{b.min():.4g}, {b.max():.4g}]"
        )
    return float(lo), float(hi)


def bd_rate(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> BDResult:
    """Average rate change (%) of `test` against `anchor` at equal PSNR; negative = saves."""
    a = _clean(rate_anchor, psnr_anchor)
    t = _clean(rate_test, psnr_test)
    if isinstance(a, str) or isinstance(t, str):
        return BDResult(None, f"anchor: {a}" if isinstance(a, str) else f"test: {t}")
    (ra, qa), (rt, qt) = a, t
    ov = _overlap(qa, qt, "PSNR")
    if isinstance(ov, str):
        return BDResult(None, ov)
    lo, hi = ov
    diff = _mean_of_fit(qt, np.log10(rt), lo, hi) - _mean_of_fit(qa, np.log10(ra), lo, hi)
    return BDResult(float((10**diff - 1) * 100), None, ov)


def bd_psnr(
    rate_anchor: Sequence[float],
    psnr_anchor: Sequence[float],
    rate_test: Sequence[float],
    psnr_test: Sequence[float],
) -> BDResult:
    """Average PSNR change (dB) of `test` against `anchor` at equal rate; positive = better."""
    a = _clean(rate_anchor, psnr_anchor)
    t = _clean(rate_test, psnr_test)
    if isinstance(a, str) or isinstance(t, str):
        return BDResult(None, f"anchor: {a}" if isinstance(a, str) else f"test: {t}")
    (ra, qa), (rt, qt) = a, t
    la, lt = np.log10(ra), np.log10(rt)
    ov = _overlap(la, lt, "log10 rate")
    if isinstance(ov, str):
        return BDResult(None, ov)
    lo, hi = ov
    diff = _mean_of_fit(lt, qt, lo, hi) - _mean_of_fit(la, qa, lo, hi)
    return BDResult(diff, None, (float(10**lo), float(10**hi)))


def bracket(
    points: Sequence[tuple[float, float]], lo: float, hi: float, axis: int, min_points: int = 4
) -> list[tuple[float, float]]:
    """The (rate, psnr) points of a dense curve that cover [lo, hi] on `axis` (0 = rate,
    1 = PSNR): those inside plus the nearest one beyond each end, widened outwards until
    there are `min_points` (enough for a cubic) or the curve runs out.

    A classic codec is swept over a wide CRF grid; fitting one cubic through all of it
    would bend the fit to points far from where the INR curve lives. Restricting it to
    the points around the INR's range keeps the fit local without extrapolating.
    """
    pts = sorted(points, key=lambda p: p[axis])
    below = [p for p in pts if p[axis] < lo]
    inside = [p for p in pts if lo <= p[axis] <= hi]
    above = [p for p in pts if p[axis] > hi]
    chosen = below[-1:] + inside + above[:1]
    below, above = below[:-1], above[1:]
    while len(chosen) < min_points and (below or above):
        if below:
            chosen.insert(0, below.pop())
        if above and len(chosen) < min_points:
            chosen.append(above.pop(0))
    return chosen
