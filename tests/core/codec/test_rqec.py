from __future__ import annotations

import numpy as np
import torch

from core.codec.rqec import dequantise, laplace_bits, layer_steps


def test_steps_follow_layer_scale() -> None:
    s = layer_steps({"a": 0.5, "b": 1 / 3}, 8)
    assert s["a"] == np.float32(0.0625)
    assert s["b"] == float(np.float32(1 / 24))


def test_dequantise_is_exact_float64_then_one_rounding() -> None:
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal(1000).astype(np.float32)}
    q = {"w": rng.integers(-300, 300, 1000).astype(np.int32)}
    steps = {"w": float(np.float32(0.0137))}
    out = dequantise(start, q, steps)["w"]
    ref = (start["w"].astype(np.float64) + q["w"].astype(np.float64) * steps["w"]).astype(
        np.float32
    )
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(dequantise(start, {"w": q["w"] * 0}, steps)["w"], start["w"])


def test_laplace_bits_prefers_small_residuals() -> None:
    b = torch.tensor(1.0)
    zero = laplace_bits(torch.zeros(100), b)
    big = laplace_bits(torch.full((100,), 5.0), b)
    assert zero < big
    # The discretised Laplace sums to one over the integers.
    ks = torch.arange(-60, 61, dtype=torch.float32)
    p = torch.stack([torch.exp2(-laplace_bits(k.view(1), torch.tensor(2.0))) for k in ks])
    assert abs(float(p.sum()) - 1) < 1e-4
