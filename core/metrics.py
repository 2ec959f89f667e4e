"""Quality and rate measures on uint8 RGB frames (T, H, W, 3)."""

from __future__ import annotations

import math

import numpy as np

PSNR_CAP = 100.0  # identical frames: report a finite, recognisable ceiling


def mse_per_frame(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    if ref.shape != test.shape:
        raise ValueError(f"shape mismatch: {ref.shape} vs {test.shape}")
    d = ref.astype(np.float64) - test.astype(np.float64)
    return (d * d).reshape(len(ref), -1).mean(axis=1)


def psnr_from_mse(mse: float) -> float:
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * math.log10(255.0**2 / mse))


def psnr_per_frame(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """RGB PSNR of each frame (dB, peak 255). A video's PSNR is their mean, as in the
    HEVC common test conditions and the NeRV papers."""
    return np.array([psnr_from_mse(m) for m in mse_per_frame(ref, test)])


def bpp(bits: float, frames: int, width: int, height: int) -> float:
    return bits / (frames * width * height)


def kbps(bits: float, frames: int, fps: float) -> float:
    return bits * fps / frames / 1000.0
