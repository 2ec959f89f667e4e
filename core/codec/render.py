"""Parameters -> frames: the one rendering path shared by the decoder and the encoder's
own quality measurement, so the PSNR the encoder reports is that of the decoded frames."""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call

from core.codec.bitstream import VERSION
from core.codec.device import memory_format, prepare
from core.codec.model import BackboneConfig, build_model
from core.codec.warmstart import Params

RENDER_BATCH = 4  # fixed, so the same machine always runs the same kernels


def clip_times(frames: int, clip_length: int) -> torch.Tensor:
    """Frame j of a clip sits at (j + 1/2) / L: time is normalised within the clip, so a
    warm-started model sees its predecessor's frames at the same inputs."""
    return (torch.arange(frames, dtype=torch.float32) + 0.5) / clip_length


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) floats -> (n, H, W, 3) uint8, rounding half up after clamping."""
    y = torch.floor(x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def render_format(version: int, device: torch.device) -> torch.memory_format:
    """The memory layout a stream's frames are rendered in. Version 1 streams keep the
    contiguous layout they were encoded with, so they decode to exactly the frames they
    always did (tests/core/codec/test_golden.py); from version 2 the layout the device
    runs fastest (core/codec/device.py), which can move a pixel by one level where a
    value sits on a rounding boundary."""
    return memory_format(device) if version >= 2 else torch.contiguous_format


@torch.no_grad()
def render(
    cfg: BackboneConfig,
    params: Params,
    frames: int,
    clip_length: int,
    device: str | torch.device = "cpu",
    version: int = VERSION,
) -> np.ndarray:
    dev = prepare(device)
    fmt = render_format(version, dev)
    model = build_model(cfg).to(dev).eval()
    weights = {
        n: torch.from_numpy(p)
        .to(dev)
        .contiguous(memory_format=fmt if p.ndim == 4 else torch.contiguous_format)
        for n, p in params.items()
    }
    times = clip_times(frames, clip_length).to(dev)
    out = [
        to_uint8(functional_call(model, weights, (times[i : i + RENDER_BATCH],)))
        for i in range(0, frames, RENDER_BATCH)
    ]
    return np.concatenate(out)
