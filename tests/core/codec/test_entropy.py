from __future__ import annotations

import numpy as np
import pytest

from core.codec import entropy


def _laplace_ints(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return np.round(rng.laplace(0, scale, n)).astype(np.int32)


@pytest.mark.parametrize("scale", [0.3, 2.0, 40.0])
def test_round_trip_several_layers(scale: float) -> None:
    rng = np.random.default_rng(0)
    layers = [_laplace_ints(rng, n, scale) for n in (1, 17, 1000, 5000)]
    params, payload = entropy.encode_layers(layers)
    out = entropy.decode_layers(params, [len(x) for x in layers], payload)
    for a, b in zip(layers, out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_layers_cost_nothing() -> None:
    layers = [np.zeros(4000, np.int32), np.zeros(10, np.int32)]
    params, payload = entropy.encode_layers(layers)
    assert params == [(0, 0), (0, 0)]
    assert payload == b""
    out = entropy.decode_layers(params, [4000, 10], payload)
    assert all(not x.any() for x in out)


def test_sparse_layer_is_cheap_and_near_its_ideal_length() -> None:
    rng = np.random.default_rng(1)
    q = np.zeros(20000, np.int32)
    q[rng.choice(20000, 200, replace=False)] = rng.choice([-1, 1], 200)
    params, payload = entropy.encode_layers([q])
    ideal = entropy.code_length_bits(q, params[0][1])
    assert len(payload) * 8 < 0.15 * q.size  # well under one bit per parameter
    assert len(payload) * 8 <= ideal * 1.05 + 64


def test_frequency_table_is_integer_and_symmetric() -> None:
    t = entropy._freq_table(5, 40000)
    assert t.dtype == np.int64 and (t >= 1).all()
    np.testing.assert_array_equal(t, t[::-1])
    assert t.argmax() == 5


@pytest.mark.parametrize("bad", [(3, 0), (3, entropy.R_ONE), (entropy.MAX_M + 1, 100)])
def test_invalid_model_parameters_raise(bad: tuple[int, int]) -> None:
    with pytest.raises(entropy.EntropyError):
        entropy._freq_table(*bad)


def test_magnitude_beyond_range_is_refused() -> None:
    with pytest.raises(entropy.EntropyError, match="exceeds"):
        entropy.encode_layers([np.array([entropy.MAX_M + 1], np.int64)])
