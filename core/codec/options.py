"""Encode options and what the presets mean: one typed object for the CLI, API and bench."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["uar", "independent", "whole"]
Preset = Literal["fast", "medium", "slow"]


class PresetValues(BaseModel):
    params_per_pixel: float  # parameter budget per pixel of one frame
    steps: int  # optimiser steps of an I-model; P-models take p_steps_ratio of it
    lam: float  # lambda in MSE + lambda * bpp
    q_den: int  # quantisation precision: step_l = init_bound_l / q_den
    lr: float
    batch: int  # frames per optimiser step


PRESETS: dict[str, PresetValues] = {
    "fast": PresetValues(params_per_pixel=1.0, steps=300, lam=2e-3, q_den=8, lr=1e-2, batch=4),
    "medium": PresetValues(params_per_pixel=2.0, steps=800, lam=2e-3, q_den=8, lr=1e-2, batch=4),
    "slow": PresetValues(params_per_pixel=4.0, steps=2000, lam=2e-3, q_den=8, lr=1e-2, batch=4),
}

# Measured (docs/method.md): halving P-model steps or learning rate cost 1-2.5 dB.
P_STEPS_RATIO = 1.0
P_LR_RATIO = 1.0


class EncodeOptions(BaseModel):
    """Everything that shapes an encode. Unset knobs take the preset's value."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    mode: Mode = "uar"
    clip_length: int = Field(16, ge=1, le=4096, description="frames per clip (latency)")
    preset: Preset = "fast"
    lam: float | None = Field(None, alias="lambda", ge=0, le=10, description="rate weight")
    params: int | None = Field(None, ge=500, le=50_000_000, description="parameters per model")
    steps: int | None = Field(None, ge=1, le=1_000_000, description="I-model training steps")
    key_interval: int = Field(0, ge=0, le=100_000, description="clips per group; 0: cuts only")
    frames: int | None = Field(None, ge=1, le=10_000_000, description="encode the first N")
    width: int | None = Field(None, ge=8, le=16384, description="downscale to this width")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    backbone: Literal["gridwarp", "grid", "nerv"] = "gridwarp"
    scene_cut: float = Field(
        0.5, ge=-1, le=1, description="correlation below which a new group starts"
    )
    adaptive_alpha: bool = True

    @property
    def preset_values(self) -> PresetValues:
        return PRESETS[self.preset]

    @property
    def effective_lambda(self) -> float:
        return self.preset_values.lam if self.lam is None else self.lam

    @property
    def effective_steps(self) -> int:
        return self.preset_values.steps if self.steps is None else self.steps
