"""Scene cuts and II's strength (encoder only): how alike two clips are, from luma
thumbnails of clip k-1's last frame and clip k's first, and the II strength alpha that
follows (docs/method.md, "Choices", 2). Nothing here is in the stream: the decoder reads
the chosen alpha_num from each chunk."""

from __future__ import annotations

import numpy as np

from core.codec.warmstart import ALPHA_DEN


def thumbnail(frame: np.ndarray, size: int = 32) -> np.ndarray:
    """Luma of an RGB uint8 frame block-averaged to about size x size, as float64."""
    y = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    h, w = y.shape
    bh, bw = max(1, h // size), max(1, w // size)
    y = y[: (h // bh) * bh, : (w // bw) * bw]
    return y.reshape(h // bh, bh, w // bw, bw).mean(axis=(1, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails; flat images count as identical if equal."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den < 1e-9:
        return 1.0 if np.allclose(a, b, atol=1.0) else 0.0
    return float((a * b).sum() / den)


def choose_alpha(rho: float, cut_threshold: float, full_threshold: float = 0.9) -> int | None:
    """Map inter-clip correlation to alpha's numerator; None: a scene cut (a key clip).

    rho >= full_threshold copies the previous model (a = 1); between the cut and full
    thresholds a falls linearly to 1/2, pulling the start back towards the previous
    model's own start when the content changed a lot.
    """
    if rho < cut_threshold:
        return None
    if rho >= full_threshold:
        return ALPHA_DEN
    frac = (rho - cut_threshold) / (full_threshold - cut_threshold)
    return round(ALPHA_DEN * (0.5 + 0.5 * frac))
