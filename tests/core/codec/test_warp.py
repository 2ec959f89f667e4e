"""The gather-based resampler must be grid_sample (bilinear, border) to float rounding,
values and gradients, or a CUDA encode would train a different model than it renders."""

from __future__ import annotations

import torch

from core.codec.warp import bilinear_border, grid_sample_border, sampling_grid


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(3, 4, 13, 17, generator=g)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(3, 1, 1)
    theta = theta + 0.3 * (torch.rand(3, 2, 3, generator=g) - 0.5)  # moves past the border
    return frames, theta


def test_values_match_grid_sample() -> None:
    for seed in range(3):
        frames, theta = _case(seed)
        grid = sampling_grid(theta, list(frames.shape))
        ref = grid_sample_border(frames, grid)
        out = bilinear_border(frames, grid)
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_identity_reproduces_the_frame() -> None:
    frames, _ = _case(0)
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(3, 1, 1)
    out = bilinear_border(frames, sampling_grid(theta, list(frames.shape)))
    assert torch.allclose(out, frames, atol=1e-5)


def test_gradients_match_grid_sample() -> None:
    frames, theta = _case(1)
    weights = torch.rand(3, 4, 13, 17)
    grads = []
    for fn in (grid_sample_border, bilinear_border):
        f = frames.clone().requires_grad_(True)
        t = theta.clone().requires_grad_(True)
        (fn(f, sampling_grid(t, list(f.shape))) * weights).sum().backward()
        assert f.grad is not None and t.grad is not None
        grads.append((f.grad, t.grad))
    (f_ref, t_ref), (f_out, t_out) = grads
    assert torch.allclose(f_out, f_ref, atol=1e-5)
    assert torch.allclose(t_out, t_ref, rtol=1e-3, atol=1e-3)
    assert t_ref.abs().max() > 0.1  # the comparison is not between two zeros
