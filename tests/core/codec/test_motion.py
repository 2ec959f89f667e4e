from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from core.codec.files import encode_file
from core.codec.model import build_model, config_for_budget, param_scales
from core.codec.motion import corner_motion_px, search_warp
from core.codec.options import EncodeOptions
from core.codec.render import clip_times
from core.codec.warmstart import seeded_init
from core.video import VideoWriter

H, W, L = 40, 56, 4


def _translation(dx: float, dy: float, slots: int) -> np.ndarray:
    w = np.zeros((slots, 6), np.float32)
    w[:, 2], w[:, 5] = 2 * dx / W, 2 * dy / H  # normalised units: 1 = half the frame
    return w


def test_corner_motion_of_a_translation_and_a_rotation() -> None:
    assert corner_motion_px(_translation(3, 0, 2), H, W) == pytest.approx(3)
    assert corner_motion_px(_translation(3, 4, 2), H, W) == pytest.approx(5)
    assert corner_motion_px(np.zeros((2, 6)), H, W) == 0
    rot = np.zeros((1, 6))
    rot[0, 1], rot[0, 3] = -0.01, 0.01  # a small rotation: corners move, the centre not
    assert 0 < corner_motion_px(rot, H, W) < 1


@pytest.fixture(scope="module")
def start() -> tuple:
    cfg = config_for_budget("gridwarp", H, W, L, 6000)
    model = build_model(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    params = seeded_init(shapes, param_scales(model), seed=5)
    params["grid"] = params["grid"] * 4  # a textured start so the alignment has edges
    model.load_state_dict({n: torch.from_numpy(v) for n, v in params.items()})
    return cfg, model, params


def test_search_finds_a_known_camera_shift(start) -> None:
    cfg, model, params = start
    times = clip_times(L, L)
    shifted = {**params, "warp": _translation(2, -1, cfg.grid_t)}
    with torch.no_grad():
        target = model.apply_warp(model.unwarped(times), times, torch.from_numpy(shifted["warp"]))
    m = search_warp(cfg, params, target, L, torch.device("cpu"))
    assert m.moving and m.gain > 0.8
    assert m.corner_px == pytest.approx(np.hypot(2, 1), abs=0.4)


def test_search_sees_a_still_camera_as_still(start) -> None:
    cfg, model, params = start
    times = clip_times(L, L)
    with torch.no_grad():
        target = model(times)
    m = search_warp(cfg, params, target, L, torch.device("cpu"))
    assert not m.moving and m.corner_px < 0.5


def _pan_video(path: Path, step: int) -> Path:
    """12 frames of a smooth synthetic scene seen through a window moving `step` px/frame."""
    y, x = np.mgrid[0 : H + 8, 0 : W + 12 * step + 8].astype(np.float64)
    rng = np.random.default_rng(0)
    scene = np.zeros((*y.shape, 3))
    for c in range(3):  # a few random low-frequency waves per channel: edges, no noise
        for _ in range(3):
            fy, fx, ph = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0, 6)
            scene[..., c] += np.sin(fy * y + fx * x + ph)
    scene = (scene - scene.min()) / np.ptp(scene) * 255
    with VideoWriter(path, Fraction(25)) as out:
        for j in range(12):
            out.write(scene[4 : 4 + H, j * step : j * step + W].astype(np.uint8))
    return path


@pytest.mark.parametrize(("step", "trained"), [(2, True), (0, False)])
def test_warp_trains_only_in_p_clips_of_a_moving_camera(
    tmp_path: Path, step: int, trained: bool
) -> None:
    src = _pan_video(tmp_path / "pan.mkv", step)
    opts = EncodeOptions(clip_length=L, steps=60, params=6000, seed=1)
    report = encode_file(src, tmp_path / "pan.uarv", opts)
    first, *rest = report["clips"]
    assert first["key"] and first["motion"] is None
    assert [c["motion"]["warp_trained"] for c in rest] == [trained] * len(rest)
    if trained:
        assert all(c["motion"]["corner_px"] > 4 for c in rest)  # 2 px/frame x 4 frames
