from __future__ import annotations

import numpy as np

from core.codec.scenecut import choose_alpha, correlation, thumbnail
from core.codec.warmstart import (
    ALPHA_DEN,
    continue_latents,
    interpolate,
    seeded_init,
    seeded_uniform,
)


def test_seeded_uniform_is_reproducible_and_uniform() -> None:
    a = seeded_uniform(7, 3, 100_000)
    np.testing.assert_array_equal(a, seeded_uniform(7, 3, 100_000))
    assert not np.array_equal(a, seeded_uniform(8, 3, 100_000))
    assert not np.array_equal(a, seeded_uniform(7, 4, 100_000))
    assert a.min() >= -1 and a.max() < 1
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1 / np.sqrt(3)) < 0.01


def test_seeded_uniform_known_values() -> None:
    # Pinned: the decoder regenerates I-model starts from this; a change breaks every stream.
    assert seeded_uniform(0, 0, 4).tolist() == [
        -0.35813379287719727,
        0.014099717140197754,
        -0.33638250827789307,
        -0.7044719457626343,
    ]
    assert seeded_uniform(12345, 7, 2).tolist() == [-0.955949068069458, 0.7046889066696167]


def test_seeded_init_scales_and_shapes() -> None:
    p = seeded_init({"w": (4, 3), "b": (4,)}, {"w": 0.5, "b": 0.1}, seed=1)
    assert p["w"].shape == (4, 3) and p["w"].dtype == np.float32
    assert np.abs(p["w"]).max() <= 0.5 and np.abs(p["b"]).max() <= 0.1


def test_interpolation_endpoints_and_midpoint() -> None:
    rng = np.random.default_rng(0)
    s = {"w": rng.standard_normal(50).astype(np.float32)}
    d = {"w": rng.standard_normal(50).astype(np.float32)}
    np.testing.assert_array_equal(interpolate(s, d, 0)["w"], s["w"])
    np.testing.assert_array_equal(interpolate(s, d, ALPHA_DEN)["w"], d["w"])
    mid = interpolate(s, d, ALPHA_DEN // 2)["w"]
    np.testing.assert_allclose(mid, (s["w"] + d["w"]) / 2, rtol=1e-6, atol=1e-6)


def test_choose_alpha_maps_correlation() -> None:
    assert choose_alpha(0.95, 0.5) == ALPHA_DEN
    assert choose_alpha(0.4, 0.5) is None  # scene cut
    mid = choose_alpha(0.7, 0.5)
    assert mid is not None and ALPHA_DEN // 2 < mid < ALPHA_DEN


def test_correlation_detects_a_cut() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert correlation(thumbnail(a), thumbnail(a)) > 0.999
    assert correlation(thumbnail(a), thumbnail(b)) < 0.3


def test_continue_latents_holds_the_last_slot() -> None:
    g = np.arange(24, dtype=np.float32).reshape(4, 2, 3, 1)
    warp = np.arange(24, dtype=np.float32).reshape(4, 6)
    out = continue_latents({"grid": g, "warp": warp, "w": np.ones(3, np.float32)})
    assert all((out["grid"][i] == g[-1]).all() for i in range(4))
    assert all((out["warp"][i] == warp[-1]).all() for i in range(4))
    np.testing.assert_array_equal(out["w"], np.ones(3))


def test_the_warp_starts_at_the_identity() -> None:
    p = seeded_init({"w": (4, 3), "warp": (2, 6)}, {"w": 0.5, "warp": 0.1}, seed=1)
    np.testing.assert_array_equal(p["warp"], np.zeros((2, 6)))
    assert np.abs(p["w"]).min() > 0
