"""The flat training engine (core/codec/fit.py): same method as the per-layer loop it
replaced (bench/legacy_fit.py), reproducible, and independent of how fits are grouped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import legacy_fit
from core.codec import entropy, fit
from core.codec.adam import FusedAdam
from core.codec.bitstream import ClipChunk
from core.codec.chain import _key_clip_start, _model_layout, plan_stream
from core.codec.options import EncodeOptions
from core.codec.render import render
from core.codec.rqec import dequantise, laplace_bits, layer_steps, ste_round
from core.metrics import psnr_per_frame
from core.video import iter_clips, probe


def _clip(src: Path, *, frames: int = 8, width: int = 48, params: int = 6000, backbone="grid"):
    opts = EncodeOptions(width=width, frames=frames, clip_length=frames, params=params)
    opts = opts.model_copy(update={"backbone": backbone})
    header = plan_stream(probe(src), opts)
    pixels = next(iter(iter_clips(src, frames, frames=frames, width=width)))
    cfg, shapes, scales = _model_layout(header)
    start = _key_clip_start(header, 0, shapes, scales)
    return cfg, start, layer_steps(scales, 8), pixels


def _settings(seed: int, steps: int = 60, **kw) -> fit.FitSettings:
    return fit.FitSettings(steps=steps, lr=1e-2, lam=2e-3, batch=4, seed=seed, **kw)


def _rd(cfg, start, steps_q, pixels, q) -> tuple[float, int]:
    out = render(cfg, dequantise(start, q, steps_q), len(pixels), len(pixels))
    _, payload = entropy.encode_layers(list(q.values()))
    return float(np.mean(psnr_per_frame(pixels, out))), len(payload)


def test_untrained_residual_is_zero_and_costs_almost_nothing(pens: Path) -> None:
    cfg, start, steps_q, pixels = _clip(pens)
    prog = fit.ClipFit(cfg, start, steps_q, pixels, len(pixels), _settings(0))
    q = prog.quantised()
    assert list(q) == list(start) and all(not v.any() for v in q.values())
    params, payload = entropy.encode_layers(list(q.values()))
    chunk = ClipChunk(1, 8, 8, False, 64, 8, params, payload).to_bytes()
    assert len(chunk) < 40  # ~6000 parameters for a handful of header bytes


def test_forward_sees_the_quantised_weights_with_straight_through_gradient() -> None:
    start = {"w": np.zeros(10, np.float32)}
    delta = torch.linspace(-1.2, 1.2, 10, requires_grad=True)
    step = torch.full((10,), 0.5)
    w = torch.zeros(10) + ste_round(delta / step) * step
    np.testing.assert_allclose(w.detach().numpy(), np.round(np.linspace(-1.2, 1.2, 10) / 0.5) * 0.5)
    w.sum().backward()
    assert delta.grad is not None and torch.allclose(delta.grad, torch.ones(10))
    assert fit.FlatLayout.of(start).total == 10


def test_flat_rate_term_equals_the_per_layer_sum() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [7, 100, 1, 40]
    q = torch.cat(
        [torch.randn(n, generator=g) * s for n, s in zip(sizes, [0.1, 3, 0, 1], strict=True)]
    )
    noise = torch.rand(len(q), generator=g) - 0.5
    seg = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    flat = fit.rate_bits(q, noise, sizes, seg)
    per_layer = sum(
        laplace_bits(part + nz, part.abs().mean())
        for part, nz in zip(torch.split(q, sizes), torch.split(noise, sizes), strict=True)
    )
    assert torch.allclose(flat, per_layer, rtol=1e-5)


def test_schedules_match_the_previous_loop() -> None:
    s = _settings(7, steps=50)
    idx, rows = fit.schedules(s, frames=10)
    gen = torch.Generator().manual_seed(7)
    order = torch.empty(0, dtype=torch.long)
    for i in range(50):  # the previous loop's draw, step by step
        if len(order) < 4:
            order = torch.cat([order, torch.randperm(10, generator=gen)])
        assert torch.equal(idx[i], order[:4])
        order = order[4:]
    lr, ramp, phase, hard, avg = rows.unbind(1)
    assert avg.eq(0).all()  # no averaging by default
    assert hard.eq(1).all()  # rounding from the first step by default
    assert float(lr[0]) == pytest.approx(1e-2) and float(lr[-1]) == pytest.approx(5e-4, rel=0.05)
    assert float(ramp[0]) == pytest.approx(0.1) and ramp[9:].eq(1).all()
    assert phase.min() >= 0 and phase.max() < 1 and len(set(phase.tolist())) == 50


def test_rd_matches_the_previous_loop_over_seeds(pens: Path) -> None:
    """Same method, new step: PSNR and bits over 3 seeds agree within seed noise."""
    cfg, start, steps_q, pixels = _clip(pens)
    res: dict[str, list[tuple[float, int]]] = {"flat": [], "legacy": []}
    for seed in range(3):
        s = _settings(seed)
        res["flat"].append(
            _rd(cfg, start, steps_q, pixels, fit.fit_residual(cfg, start, steps_q, pixels, 8, s).q)
        )
        legacy = legacy_fit.fit_residual(cfg, start, steps_q, pixels, 8, s)
        res["legacy"].append(_rd(cfg, start, steps_q, pixels, legacy.q))
    (p_new, b_new), (p_old, b_old) = (np.mean(res[k], axis=0) for k in ("flat", "legacy"))
    spread = max(np.ptp([p for p, _ in res[k]]) for k in res)
    assert abs(p_new - p_old) < max(0.5, spread), res
    assert abs(b_new / b_old - 1) < 0.1, res


def test_same_settings_give_the_same_residual(pens: Path) -> None:
    cfg, start, steps_q, pixels = _clip(pens, backbone="gridwarp")
    a = fit.fit_residual(cfg, start, steps_q, pixels, 8, _settings(3, steps=20))
    b = fit.fit_residual(cfg, start, steps_q, pixels, 8, _settings(3, steps=20))
    assert all(np.array_equal(a.q[n], b.q[n]) for n in a.q)
    assert any(v.any() for v in a.q.values())


def test_concurrent_fits_equal_fits_alone(pens: Path) -> None:
    cfg, start, steps_q, pixels = _clip(pens)
    jobs = [fit.FitJob(cfg, start, steps_q, pixels, 8, _settings(s, steps=15)) for s in (1, 2)]
    together = fit.fit_concurrently(jobs)
    for job, got in zip(jobs, together, strict=True):
        alone = fit.fit_residual(job.cfg, job.start, job.steps_q, job.frames, 8, job.fit)
        assert all(np.array_equal(alone.q[n], got.q[n]) for n in alone.q)
    assert not all(np.array_equal(together[0].q[n], together[1].q[n]) for n in together[0].q)


def test_failed_capture_falls_back_to_the_same_eager_step(
    pens: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture failure cannot be caused without a GPU: it is simulated (the one mock)."""
    cfg, start, steps_q, pixels = _clip(pens)
    s = _settings(4, steps=12)
    plain = fit.fit_residual(cfg, start, steps_q, pixels, 8, s)

    def broken(self: fit.ClipFit) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(fit.ClipFit, "can_capture", lambda self: True)
    monkeypatch.setattr(fit.ClipFit, "_capture", broken)
    fell_back = fit.fit_residual(cfg, start, steps_q, pixels, 8, s)
    assert fell_back.engine.startswith("eager (capture failed")
    assert all(np.array_equal(plain.q[n], fell_back.q[n]) for n in plain.q)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_fit_is_deterministic_and_graph_equals_eager(pens: Path) -> None:
    cfg, start, steps_q, pixels = _clip(pens, backbone="gridwarp")
    runs = [
        fit.fit_residual(cfg, start, steps_q, pixels, 8, _settings(5, device="cuda", graphs=g))
        for g in (True, True, False)
    ]
    assert runs[0].engine == "cuda-graph" and runs[2].engine == "eager"
    for other in runs[1:]:
        assert all(np.array_equal(runs[0].q[n], other.q[n]) for n in runs[0].q)


def test_fused_adam_is_torch_adam_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.zeros(1000, requires_grad=True)
    b = torch.zeros(1000, requires_grad=True)
    lr = torch.tensor(0.01)
    ours = FusedAdam(a, lr)
    ref = torch.optim.Adam([b], lr=torch.tensor(0.01), fused=True)
    for i in range(5):
        grad = torch.randn(1000, generator=g) * (i + 1)
        a.grad, b.grad = grad.clone(), grad.clone()
        lr.fill_(0.01 / (i + 1))
        ref.param_groups[0]["lr"].fill_(0.01 / (i + 1))
        ours.step()
        ref.step()
        assert torch.equal(a, b), i
    ours.zero_grad()
    assert a.grad is None
