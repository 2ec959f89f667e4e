"""Starting points of clip models: the seeded I-model init and II for P-models.

Everything here is bit-exact on every machine, because the decoder must rebuild the very
same `theta'_k` the encoder froze:

* the seeded init comes from a counter-based integer hash (splitmix64) in numpy uint64
  arithmetic, not from torch's or numpy's RNG whose streams are not promised stable across
  versions and devices;
* II uses only elementwise IEEE float64 operations (multiply, add) on float32 inputs with
  a dyadic strength alpha (a multiple of 1/ALPHA_DEN), then one rounding to float32.

II follows reading (a) (docs/method.md, "Choices", 1), with alpha = a_k there:
    theta'_k = theta'_{k-1} + alpha * (theta_hat_{k-1} - theta'_{k-1})
so alpha = 1 copies the previous decoded model and alpha = 0 restarts from its starting
point. On the wire alpha is `alpha_num` / ALPHA_DEN (core/codec/bitstream.py).
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]  # name -> float32 array, in the model's parameter order

ALPHA_DEN = 64  # alpha is sent as an integer numerator over this (one byte in the chunk)

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _M64


def seeded_uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """n float64 values uniform in [-1, 1), exactly reproducible from (seed, stream)."""
    salt = _splitmix64(np.array([(seed & 0xFFFFFFFF) << 32 | (stream & 0xFFFFFFFF)], np.uint64))
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix64(idx + salt[0] * np.uint64(0x100000001B3))
    u24 = (bits >> np.uint64(40)).astype(np.float64)  # top 24 bits, exact in float64
    return u24 / float(1 << 23) - 1.0


# Parameters whose I-model start is zero rather than random: a random global warp would
# jitter every frame by up to a pixel before training has to undo it.
ZERO_START = frozenset({"warp"})
# Time-slot parameters (Tg, ...) that II continues from the predecessor's last slot: the
# latent grid, the global warp, and HiNeRV's stage grids ("grids.0", "grids.1", ...).
TIME_SLOTS = ("grid", "warp")


def is_time_slots(name: str) -> bool:
    return name in TIME_SLOTS or name.startswith("grids.")


def seeded_init(shapes: dict[str, tuple[int, ...]], scales: dict[str, float], seed: int) -> Params:
    """PyTorch-like uniform(-bound, bound) init that any decoder regenerates from the seed."""
    out: Params = {}
    for i, (name, shape) in enumerate(shapes.items()):
        if name in ZERO_START:
            out[name] = np.zeros(shape, dtype=np.float32)
            continue
        n = int(np.prod(shape))
        out[name] = (seeded_uniform(seed, i, n) * scales[name]).astype(np.float32).reshape(shape)
    return out


def interpolate(start_prev: Params, decoded_prev: Params, alpha_num: int) -> Params:
    """II: theta'_k from the previous model's start and decoded parameters."""
    if not 0 <= alpha_num <= ALPHA_DEN:
        raise ValueError(f"alpha numerator {alpha_num} outside 0..{ALPHA_DEN}")
    a = alpha_num / ALPHA_DEN  # dyadic: exact in binary floating point
    out: Params = {}
    for name, s in start_prev.items():
        s64 = s.astype(np.float64)
        out[name] = (s64 + a * (decoded_prev[name].astype(np.float64) - s64)).astype(np.float32)
    return out


def continue_latents(start: Params) -> Params:
    """For the grid backbones: every time slot of clip k's latent grid (and global warp)
    starts from the last slot of clip k-1's, the content (and camera pose) nearest in time
    to the new clip. Frame j of clip k is L frames after frame j of clip k-1, so copying
    slot-for-slot (plain II) starts a moving scene from stale content; measured in
    docs/method.md."""
    out = dict(start)
    for name, g in start.items():
        if is_time_slots(name):
            out[name] = np.ascontiguousarray(np.broadcast_to(g[-1:], g.shape))
    return out
