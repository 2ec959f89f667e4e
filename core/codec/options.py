"""Encode options and what the presets mean: one typed object for the CLI, API and bench."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from copy import copy
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Mode = Literal["uar", "independent", "whole"]
Preset = Literal["fast", "medium", "slow", "long"]


class PresetValues(BaseModel):
    """What a preset means: the compute spent per clip (steps, batch) and how it trains.
    The rate-distortion trade-off (model size, precision, rate weight) is the quality's
    (see `rate_settings`)."""

    params_per_pixel: float  # parameter budget per pixel of one frame, at quality 5
    steps: int  # optimiser steps of an I-model; P-models take p_steps_ratio of it
    lam: float  # lambda in MSE + lambda * bpp, at quality 5
    q_den: int  # quantisation precision (step_l = init_bound_l / q_den), at quality 5
    lr: float  # Adam's learning rate for models up to one parameter per pixel (see lr_for)
    batch: int  # frames per optimiser step
    qat_from: float = 0.0  # share of the steps trained on unrounded weights first
    average: float = 0.0  # share of the final steps whose residuals are averaged


# Presets are compute: the same model size at every preset (the quality's), trained for
# more steps. fast ~ seconds per clip at 160 px on 2 CPU cores, slow fits 48 frames at
# 160 px in about two minutes there, long is for GPUs (docs/method.md, "Presets").
_TRAIN = {"lam": 2e-3, "q_den": 8, "lr": 2e-2, "batch": 4, "qat_from": 0.7, "average": 0.2}
PRESETS: dict[str, PresetValues] = {
    "fast": PresetValues(params_per_pixel=1.0, steps=300, **_TRAIN),
    "medium": PresetValues(params_per_pixel=1.0, steps=700, **_TRAIN),
    "slow": PresetValues(params_per_pixel=1.0, steps=1200, **_TRAIN),
    "long": PresetValues(params_per_pixel=1.0, steps=10000, **_TRAIN),
}

# Measured (docs/method.md): P-models start near a solution; at half the I-model's
# learning rate their residuals are sparser and their clips better (-7 to -28 % bits at
# equal or better PSNR), at half the steps they lose up to 0.3 dB.
P_STEPS_RATIO = 1.0
P_LR_RATIO = 0.5
P_LAMBDA_RATIO = 1.0  # rate weight of P-models relative to I-models
# A P-clip whose warm start explains less of it than this (R^2 of the start's frames, after
# the best global warp, against the clip; 0 = no better than a flat frame) starts a new
# group if a fresh I-model's start predicts it better (core/codec/chain.py plan_clip). On
# the five sample videos (first 48 frames at 160 px, fast preset) every P-clip's start
# explained 0.69 to 0.97, so this acts only where the chain has nothing left to offer.
RESTART_BELOW = 0.0
P_TRAIN = "all"  # "all" layers of a P-model train, or only its time "slots" (grids, warp)


DEFAULT_QUALITY = 5.0
BITS_PER_PARAM = 4.0  # typical coded bits per parameter of an I-model (docs/method.md)
# Per-clip quality search for --target-bpp/--target-psnr: two trial fits this far either
# side of the stream's quality, each with this share of the clip's steps.
TARGET_SPAN = 1.5
TARGET_TRIAL_SHARE = 0.25


class RateSettings(BaseModel):
    """What a quality level means for one clip: model size (per stream, in the header),
    quantisation precision (per clip, in the chunk) and rate weight (encoder only)."""

    params_per_pixel: float
    q_den: int
    lam: float


def rate_settings(pv: PresetValues, quality: float) -> RateSettings:
    """Quality, CRF-like but higher is better: one step of 1 doubles the model's size per
    2 steps, its precision per 4 and halves the rate weight per 2, so bits and PSNR both
    rise monotonically with it (docs/method.md, "The rate knob")."""
    q = quality - DEFAULT_QUALITY
    return RateSettings(
        params_per_pixel=pv.params_per_pixel * 2 ** (q / 2),
        q_den=max(1, round(pv.q_den * 2 ** (q / 4))),
        lam=pv.lam * 2 ** (-q / 2),
    )


def backbone_names() -> list[str]:
    """The registered backbones (core/codec/model.py), looked up on first need: their module
    imports torch (seconds), which the API and `uarnvc --help` otherwise never load."""
    from core.codec.model import BACKBONES

    return list(BACKBONES)


class BackboneNames:
    """`backbone_names()` as argparse `choices` that load the registry only when a
    --backbone is given or its help shown (give the argument a metavar)."""

    def __contains__(self, name: object) -> bool:
        return name in backbone_names()

    def __iter__(self) -> Iterator[str]:
        return iter(backbone_names())


class EncodeOptions(BaseModel):
    """Everything that shapes an encode. Unset knobs take the preset's value."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    mode: Mode = Field(
        "uar", description="uar: chained clips; independent: every clip alone; whole: one model"
    )
    clip_length: int = Field(16, ge=1, le=4096, description="frames per clip: the latency knob")
    preset: Preset = Field("fast", description="training compute: fast, medium, slow, long (GPU)")
    lam: float | None = Field(
        None, alias="lambda", ge=0, le=10, description="rate weight in MSE + lambda*bpp"
    )
    params: int | None = Field(
        None, ge=500, le=50_000_000, description="parameters per clip model (from the quality)"
    )
    steps: int | None = Field(
        None, ge=1, le=1_000_000, description="training steps per clip (from the preset)"
    )
    key_interval: int = Field(
        0, ge=0, le=100_000, description="clips per group of models; 0: scene cuts only"
    )
    frames: int | None = Field(None, ge=1, le=10_000_000, description="encode the first N frames")
    width: int | None = Field(
        None, ge=8, le=16384, description="downscale to this width, keeping the aspect ratio"
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the I-models' starts")
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu or cuda[:N]")
    backbone: str = Field("gridwarp", description="a registered backbone (core/codec/model.py)")
    scene_cut: float = Field(
        0.5, ge=-1, le=1, description="correlation below which a new group starts"
    )
    adaptive_alpha: bool = True
    quality: float = Field(
        DEFAULT_QUALITY,
        ge=0,
        le=10,
        description="0 (smallest) .. 10 (best), CRF-like but higher is better: sets model "
        "size, precision and rate weight together",
    )
    target_bpp: float | None = Field(
        None, gt=0, le=24, description="choose the quality per clip to hit this bits/pixel"
    )
    target_psnr: float | None = Field(
        None, ge=10, le=80, description="choose the quality per clip to hit this PSNR (dB)"
    )

    @field_validator("backbone")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in backbone_names():
            raise ValueError(f"unknown backbone {v!r}; registered: {', '.join(backbone_names())}")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> EncodeOptions:
        if self.target_bpp is not None and self.target_psnr is not None:
            raise ValueError("give target_bpp or target_psnr, not both")
        return self

    @property
    def targeted(self) -> bool:
        return self.target_bpp is not None or self.target_psnr is not None

    @property
    def preset_values(self) -> PresetValues:
        return PRESETS[self.preset]

    def rate(self, quality: float | None = None) -> RateSettings:
        """The rate settings at `quality` (default: the options' own); explicit --lambda
        overrides the quality's rate weight."""
        rs = rate_settings(self.preset_values, self.quality if quality is None else quality)
        return rs if self.lam is None else rs.model_copy(update={"lam": self.lam})

    @property
    def effective_lambda(self) -> float:
        return self.rate().lam

    def stream_quality(self, clip_length: int) -> float:
        """The quality that sizes the stream's model (one size for every clip). For a bpp
        target: the size whose parameters at ~BITS_PER_PARAM bits each spend the target
        over a clip (each clip's search then tunes precision and rate weight)."""
        if self.target_bpp is None:
            return self.quality
        ppp = self.target_bpp * clip_length / BITS_PER_PARAM
        q = DEFAULT_QUALITY + 2 * math.log2(ppp / self.preset_values.params_per_pixel)
        return min(10.0, max(0.0, q))

    @property
    def effective_steps(self) -> int:
        return self.preset_values.steps if self.steps is None else self.steps


# The options a caller chooses, in the order the CLI lists them: the CLI's flags
# (core/cli.py) and the service's job options (core/jobs.py) are derived from the fields
# above, so each limit, default and help text lives in one place. The service leaves out
# what its workers decide (SERVER_DECIDES).
CALLER_OPTIONS: tuple[str, ...] = (
    "mode", "clip_length", "preset", "quality", "target_bpp", "target_psnr", "lam", "params",
    "steps", "key_interval", "frames", "width", "seed", "device", "backbone",
)  # fmt: skip
SERVER_DECIDES: frozenset[str] = frozenset({"device", "backbone"})


def optional_fields(names: Iterable[str]) -> dict[str, Any]:
    """EncodeOptions' fields `names` as optional ones (None: the codec's default), with the
    same limits, alias and description: for `pydantic.create_model`."""
    out: dict[str, Any] = {}
    for name in names:
        info = copy(EncodeOptions.model_fields[name])
        info.default = None
        out[name] = (Optional[info.annotation], info)  # noqa: UP045 (a runtime type)
    return out
