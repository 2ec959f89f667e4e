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
    stage_sizes,
    upsample2,
)
from core.codec.warmstart import is_time_slots


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


@pytest.mark.parametrize(("h", "w"), [(5, 7), (1, 4), (6, 6)])
def test_upsample2_is_bilinear_interpolation(h: int, w: int) -> None:
    x = torch.rand(2, 3, h, w)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample2(x), ref, rtol=0, atol=1e-6)


def test_hinerv_stage_grids_are_time_slots_and_change_the_output() -> None:
    cfg = config_for_budget("hinerv", 90, 160, 16, 20_000)
    model = build_model(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert "grid" in names and any(n.startswith("grids.") for n in names)
    assert all(is_time_slots(n) for n in names if n.startswith("grids."))
    assert [s for s in stage_sizes(cfg)][-1] == (90, 160)
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.3, 0.3)
        before = model(t)
        model.grids[0].add_(1.0)
        after = model(t)
    assert before.shape == (2, 3, 90, 160) and not torch.allclose(before, after)


def test_one_registry_feeds_the_options_the_cli_and_the_stream_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backbone registered with the decorator is at once an option, a CLI choice and a
    name a stream may carry; an unregistered one is none of these."""
    import argparse

    from core.cli import add_encode_options
    from core.codec import model
    from core.codec.options import EncodeOptions

    monkeypatch.setattr(model, "BACKBONES", dict(BACKBONES))

    @model.register_backbone("grid2", time_slots=True)
    class Grid2(model.GridNeRV):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        model.register_backbone("grid2", time_slots=True)(Grid2)
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_encode_options(parser)
    cfg = config_for_budget("grid2", 36, 48, clip_length=4, params=8000)
    assert isinstance(build_model(model.BackboneConfig.from_dict(cfg.to_dict())), Grid2)
    assert parser.parse_args(["--backbone", "grid2"]).backbone == "grid2"
    assert EncodeOptions(backbone="grid2").backbone == "grid2"
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parser.parse_args(["--backbone", "grid3"])
    with pytest.raises(ValueError, match="unknown backbone 'grid3'"):
        EncodeOptions(backbone="grid3")
    with pytest.raises(ValueError, match="unknown backbone 'grid3'"):
        model.BackboneConfig.from_dict({**cfg.to_dict(), "name": "grid3"})


def test_backbone_config_bounds_are_on_the_type() -> None:
    """The encoder's own configs are validated like a stream's: no field escapes them."""
    from core.codec.model import MAX_CHANNELS, BackboneConfig

    cfg = config_for_budget("hinerv", 36, 48, clip_length=8, params=20_000).to_dict()
    assert BackboneConfig.from_dict(cfg).to_dict() == cfg
    with pytest.raises(ValueError, match=f"less than or equal to {MAX_CHANNELS}"):
        BackboneConfig(**{**cfg, "channels": (MAX_CHANNELS + 1, 8)})
    with pytest.raises(ValueError, match="config has unknown keys"):
        BackboneConfig.from_dict({**cfg, "depth": 3})
    with pytest.raises(ValueError, match="extra is not an object"):
        BackboneConfig.from_dict({**cfg, "extra": [1]})
