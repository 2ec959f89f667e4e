from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from core.codec.model import (
    BACKBONES,
    WARP_SCALE,
    build_model,
    config_for_budget,
    count_params,
    param_scales,
)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize(("height", "width"), [(90, 160), (131, 160), (37, 53)])
def test_budget_is_respected_and_frames_have_the_exact_size(
    name: str, height: int, width: int
) -> None:
    cfg = config_for_budget(name, height, width, clip_length=8, params=20_000)
    assert count_params(cfg) <= 20_000
    wider = config_for_budget(name, height, width, clip_length=8, params=40_000)
    assert count_params(wider) > count_params(cfg)
    with torch.no_grad():
        out = build_model(cfg)(torch.tensor([0.1, 0.9]))
    assert out.shape == (2, 3, height, width)


def _grid_and_warp(height: int = 48, width: int = 64) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    grid = build_model(config_for_budget("grid", height, width, 8, 8000))
    warp = build_model(config_for_budget("gridwarp", height, width, 8, 8000))
    with torch.no_grad():
        for p in grid.parameters():
            p.uniform_(-0.5, 0.5)
    return grid, warp


def test_zero_warp_reproduces_the_grid_backbone_exactly() -> None:
    grid, warp = _grid_and_warp()
    weights = {**dict(grid.named_parameters()), "warp": torch.zeros_like(warp.warp)}
    t = torch.tensor([0.05, 0.5, 0.95])
    with torch.no_grad():
        # affine_grid's pixel centres carry float32 rounding: 1e-4 is 1/40 of a uint8 level.
        torch.testing.assert_close(functional_call(warp, weights, (t,)), grid(t), rtol=0, atol=1e-4)


def test_warp_translation_moves_the_frame_by_whole_pixels() -> None:
    height, width, dx = 48, 64, 3
    grid, warp = _grid_and_warp(height, width)
    shift = torch.zeros_like(warp.warp)
    shift[:, 2] = 2 * dx / width  # a02 in normalised units: 1 = half the width
    weights = {**dict(grid.named_parameters()), "warp": shift}
    t = torch.tensor([0.3])
    with torch.no_grad():
        moved = functional_call(warp, weights, (t,))
        still = grid(t)
    # Output pixel x samples the decoder's frame at x + dx (border repeated beyond it).
    torch.testing.assert_close(moved[..., : width - dx], still[..., dx:], rtol=0, atol=1e-4)
    assert not torch.allclose(moved, still, atol=1e-3)


def test_warp_step_is_an_eighth_of_a_pixel_at_the_edge() -> None:
    cfg = config_for_budget("gridwarp", 90, 160, 8, 20_000)
    scale = param_scales(build_model(cfg))["warp"]
    assert scale == WARP_SCALE / 160
    # step = scale / q_den; at q_den 8 a translation step is (step * W / 2) pixels.
    assert scale / 8 * 160 / 2 == pytest.approx(1 / 8)
