"""Parameters -> frames: the one rendering path shared by the decoder and the encoder's
own quality measurement, so the PSNR the encoder reports is that of the decoded frames."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

from core.codec.init import Params
from core.codec.model import BackboneConfig, build_model

RENDER_BATCH = 4  # fixed, so the same machine always runs the same kernels


def clip_times(frames: int, clip_length: int) -> torch.Tensor:
    """Frame j of a clip sits at (j + 1/2) / L: time is normalised within the clip, so a
    warm-started model sees its predecessor's frames at the same inputs."""
    return (torch.arange(frames, dtype=torch.float32) + 0.5) / clip_length


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) floats -> (n, H, W, 3) uint8, rounding half up after clamping."""
    y = torch.floor(x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


@torch.no_grad()
def render(
    cfg: BackboneConfig,
    params: Params,
    frames: int,
    clip_length: int,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    model = build_model(cfg).to(device).eval()
    weights = {n: torch.from_numpy(p).to(device) for n, p in params.items()}
    times = clip_times(frames, clip_length).to(device)
    out = [
        to_uint8(functional_call(model, weights, (times[i : i + RENDER_BATCH],)))
        for i in range(0, frames, RENDER_BATCH)
    ]
    return np.concatenate(out)
