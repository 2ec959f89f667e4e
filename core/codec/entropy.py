"""Entropy coding of quantised residuals: a per-layer discretised Laplace, range coded.

The model of layer l is a zero-mean Laplace discretised to integers and truncated to
[-M_l, M_l] (M_l = the layer's largest |q|, sent in the chunk). Its shape is one integer,
r_l = round(65536 * exp(-1/b)), also sent. The probability table is built from (M, r)
with *integer arithmetic only*, so every decoder on every machine builds the identical
table (the failure CompressAI #279/#309 and encodec #95 describe comes from float CDFs).
The table is handed to constriction's Categorical model, whose quantisation of f64
probabilities is itself deterministic, and coded with constriction's range coder.

The same discretised Laplace, in floating point and with a fitted scale, is the rate term
of training (rqec.py), so the optimiser minimises the bits this coder will spend.
"""

from __future__ import annotations

import math
from functools import lru_cache

import constriction
import numpy as np

R_ONE = 1 << 16  # r is a 16-bit fixed-point fraction
MAX_M = (1 << 15) - 1  # largest |q| a layer may carry


class EntropyError(ValueError):
    pass


@lru_cache(maxsize=1024)
def _freq_table(m: int, r_int: int) -> np.ndarray:
    """Integer frequencies of q = -m..m for the discretised Laplace with r = r_int / 2^16.

    P(0) = 1 - sqrt(r);  P(+-k) = sqrt(r) (1 - r) r^(k-1) / 2  (k >= 1), in units of 2^-32,
    floored at 1 so every symbol in range stays codable.
    """
    if not 0 < r_int < R_ONE:
        raise EntropyError(f"Laplace parameter r={r_int} outside 1..{R_ONE - 1}")
    if not 0 <= m <= MAX_M:
        raise EntropyError(f"symbol range {m} outside 0..{MAX_M}")
    s = math.isqrt(r_int << 16)  # sqrt(r) * 2^16, floored
    tail = [0] * m
    g = (s * (R_ONE - r_int)) >> 1  # P(1) * 2^32
    for k in range(m):
        tail[k] = max(1, g)
        g = (g * r_int) >> 16
    p0 = max(1, (R_ONE - s) << 16)
    return np.array([*tail[::-1], p0, *tail], dtype=np.int64)


def _model(m: int, r_int: int) -> constriction.stream.model.Categorical:
    freqs = _freq_table(m, r_int)
    return constriction.stream.model.Categorical(freqs / freqs.sum(), perfect=False)


def _histogram(q: np.ndarray) -> tuple[int, np.ndarray]:
    m = int(np.abs(q).max(initial=0))
    return m, np.bincount((q.ravel() + m).astype(np.int64), minlength=2 * m + 1)


def _bits_of(m: int, counts: np.ndarray, r_int: int) -> float:
    freqs = _freq_table(m, r_int).astype(np.float64)
    nz = counts > 0
    return float(-(counts[nz] * np.log2(freqs[nz] / freqs.sum())).sum())


def code_length_bits(q: np.ndarray, r_int: int) -> float:
    """Ideal code length of q under the (M, r) model: what fitting minimises."""
    m, counts = _histogram(q)
    return 0.0 if m == 0 else _bits_of(m, counts, r_int)


def fit_r(q: np.ndarray) -> int:
    """The r that codes q shortest: a coarse scan over log-spaced Laplace scales, refined.
    The histogram is taken once; each candidate costs O(2M+1), not O(len(q))."""
    m, counts = _histogram(q)
    if m == 0:
        return R_ONE // 2
    cands = {
        min(R_ONE - 1, max(1, round(R_ONE * math.exp(-1.0 / b))))
        for b in np.geomspace(0.02, 4096, 64)
    }
    best = min(cands, key=lambda r: _bits_of(m, counts, r))
    lo, hi = max(1, int(best * 0.9)), min(R_ONE - 1, int(best * 1.1) + 1)
    fine = set(np.linspace(lo, hi, 24).astype(int).tolist()) | {best}
    return min(fine, key=lambda r: _bits_of(m, counts, r))


def encode_layers(layers: list[np.ndarray]) -> tuple[list[tuple[int, int]], bytes]:
    """Range-code integer tensors, one model per layer: ([(M, r), ...], payload bytes)."""
    encoder = constriction.stream.queue.RangeEncoder()
    params: list[tuple[int, int]] = []
    for q in layers:
        flat = q.ravel().astype(np.int64)
        m = int(np.abs(flat).max(initial=0))
        if m > MAX_M:
            raise EntropyError(f"residual magnitude {m} exceeds {MAX_M}: step too small")
        if m == 0:  # an all-zero layer costs nothing beyond its M = 0
            params.append((0, 0))
            continue
        r = fit_r(flat)
        encoder.encode((flat + m).astype(np.int32), _model(m, r))
        params.append((m, r))
    words = encoder.get_compressed()
    return params, words.astype("<u4").tobytes()


def decode_layers(
    params: list[tuple[int, int]], sizes: list[int], payload: bytes
) -> list[np.ndarray]:
    """Inverse of encode_layers; raises EntropyError on inconsistent input."""
    if len(payload) % 4:
        raise EntropyError(f"payload length {len(payload)} is not a multiple of 4")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out: list[np.ndarray] = []
    for (m, r), n in zip(params, sizes, strict=True):
        if m == 0:
            out.append(np.zeros(n, dtype=np.int32))
            continue
        try:
            sym = decoder.decode(_model(m, r), n)
        except Exception as e:  # constriction raises plain errors on corrupt streams
            raise EntropyError(f"range decoder failed: {e}") from e
        out.append(sym.astype(np.int32) - m)
    return out
