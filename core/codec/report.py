"""What encoding a clip measured: one typed record, built by `finish_clip`
(core/codec/chain.py) and read by the file report (core/codec/files.py), the CLI and the
service's workers, which store its `model_dump()` as the clip's metrics JSON."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from core.codec import entropy
from core.codec.warmstart import is_time_slots


class MotionMetrics(BaseModel):
    """How the warm start fits a P-clip (core/codec/motion.py)."""

    corner_px: float  # the best warp's largest corner displacement, in pixels
    gain: float  # the share of the start's error that warp removes
    warp_trained: bool
    explained: float  # R^2 of the start as a predictor of the clip (docs/method.md)


class LayerStats(BaseModel):
    """The coded residual of one kind of parameter (see `layer_type`)."""

    params: int
    zero_share: float
    bits_per_param: float  # ideal code length; the range coder adds a few bytes


class ClipMetrics(BaseModel):
    """One clip's encode, as a decoder will see it (PSNR of the rendered frames)."""

    index: int
    first_frame: int
    frames: int
    key: bool  # a key clip: an I-model from a seeded start
    group_start: int  # the key clip this clip's chain starts at
    a_k: float  # II's strength alpha (docs/method.md, glossary); 0 for a key clip
    correlation: float | None  # thumbnail correlation with the previous clip
    steps: int
    motion: MotionMetrics | None  # P-clips only
    bytes: int
    bits: int
    bpp: float
    psnr: float
    psnr_frames: list[float]
    mse: float
    nonzero_residuals: int
    layer_types: dict[str, LayerStats]
    params: int
    quality: float
    engine: str  # the training engine that ran (core/codec/fit.py)
    train_seconds: float
    seconds: float
    peak_rss_mb: float
    peak_cuda_mb: float | None = None  # CUDA devices only


def layer_type(name: str) -> str:
    """The kind of parameter a layer holds, for the residual statistics."""
    if is_time_slots(name):
        return "warp" if name == "warp" else "latent grid"
    return "bias" if name.endswith(".bias") else "weight"


def residual_stats(
    q: dict[str, np.ndarray], layer_params: list[tuple[int, int]]
) -> dict[str, LayerStats]:
    """Per kind of parameter: count, share of zero residuals, and bits per parameter under
    the coded (M, r) models (the ideal code length; the range coder adds a few bytes)."""
    sums: dict[str, list[float]] = {}  # kind -> [params, zeros, bits]
    for (name, v), (m, r) in zip(q.items(), layer_params, strict=True):
        st = sums.setdefault(layer_type(name), [0, 0, 0.0])
        st[0] += v.size
        st[1] += v.size - int(np.count_nonzero(v))
        st[2] += entropy.code_length_bits(v.ravel().astype(np.int64), r) if m else 0.0
    return {
        kind: LayerStats(
            params=int(params), zero_share=zeros / params, bits_per_param=bits / params
        )
        for kind, (params, zeros, bits) in sums.items()
    }
