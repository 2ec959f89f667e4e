"""RQEC: residual quantisation with an entropy constraint.

A clip model computes with theta = theta' + step * q, where theta' (the start, from the
seeded init or from II) is frozen and only the residual is trained. Each layer has one
step, step_l = scale_l / q_den: scale_l is the layer's init bound (model.param_scales) and
q_den (the precision, per clip, in the chunk) is set by the preset. Both are computed with
IEEE-exact operations, so the decoder derives the same steps.

Training is quantisation-aware: the forward pass uses the rounded residual with a
straight-through gradient (the network sees exactly the weights the decoder will have),
while the rate term sees the residual plus uniform noise (a smooth proxy of rounding) and
is measured in bits under the discretised Laplace of entropy.py with a scale fitted to the
current residual. Loss = MSE + lambda * bits / pixels, i.e. D + lambda * R with R in bpp.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.codec.warmstart import Params

LN2 = math.log(2.0)


def layer_steps(scales: dict[str, float], q_den: int) -> dict[str, float]:
    """Per-layer quantisation steps (float32 values), identical on every machine."""
    if q_den < 1:
        raise ValueError(f"q_den must be >= 1, got {q_den}")
    return {name: float(np.float32(s / q_den)) for name, s in scales.items()}


def dequantise(start: Params, q: dict[str, np.ndarray], steps: dict[str, float]) -> Params:
    """theta_hat = theta' + step * q, bit-exact: the product is exact in float64 (24-bit
    mantissa times |q| < 2^15), the sum is one IEEE rounding, then one cast to float32."""
    out: Params = {}
    for name, s in start.items():
        qi = q[name].reshape(s.shape).astype(np.float64)
        out[name] = (s.astype(np.float64) + qi * steps[name]).astype(np.float32)
    return out


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def laplace_bits(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bits of (noisy) integers q under a zero-mean Laplace of `scale` discretised to
    unit bins: -log2(F(q + 1/2) - F(q - 1/2)), written in a numerically stable form."""
    x = q.abs()
    b = scale.clamp_min(1e-3)
    upper = torch.exp(-(x + 0.5) / b)
    lower = torch.exp(-(x - 0.5).abs() / b)
    p_tail = 0.5 * (lower - upper)  # |q| >= 1/2
    p_mid = 1.0 - 0.5 * (lower + upper)  # |q| < 1/2
    p = torch.where(x >= 0.5, p_tail, p_mid).clamp_min(1e-12)
    return -torch.log(p).sum() / LN2
