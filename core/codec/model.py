"""INR backbones: a clip's frames as a function of (clip-normalised) time.

Every backbone maps times t in [0, 1) (frame j of a clip of nominal length L sits at
(j + 0.5) / L) to RGB frames. Its configuration is fully described by a small JSON-able
dict that travels in the stream header, so the decoder rebuilds the identical network.

Three backbones are registered, all built on the same NeRV decoder (conv 3x3 ->
PixelShuffle(2) -> GELU blocks, a conv head, a crop to the exact frame size so odd sizes
work):

* ``nerv``: positional encoding of t -> MLP -> base feature map (NeRV, NeurIPS 2021).
* ``grid``: a learned temporal latent grid (Tg x C0 x h x w) linearly interpolated at t;
  a cheap stand-in for HNeRV/HiNeRV's content embeddings and grids, with far fewer
  parameters for the base feature map than NeRV's MLP.
* ``gridwarp``: ``grid`` followed by a learned global affine warp per time slot (Tg x 6,
  interpolated at t like the grid). The default (see docs/method.md): camera motion
  (pans, zooms, rotation) becomes a few warp numbers instead of re-fitted decoder weights,
  so a warm-started P-model mostly keeps its predecessor's content and only moves it.

Model size is solved from a parameter budget and the frame size, never per resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    height: int
    width: int
    base_h: int
    base_w: int
    channels: tuple[int, ...]  # channels at the base grid, then after each upsampling stage
    grid_t: int = 0  # temporal slots of the latent grid (grid stem)
    pe_freqs: int = 0  # positional-encoding frequencies (mlp stem)
    mlp_hidden: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> int:
        return len(self.channels) - 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        d = dict(d)
        d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)


class _Decoder(nn.Module):
    """NeRV upsampling blocks; the crop makes any output size (odd included) exact."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(
            nn.Conv2d(cin, cout * 4, 3, padding=1)
            for cin, cout in zip(cfg.channels[:-1], cfg.channels[1:], strict=True)
        )
        self.head = nn.Conv2d(cfg.channels[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.blocks:
            x = F.gelu(F.pixel_shuffle(conv(x), 2))
        x = self.head(x) + 0.5
        return x[:, :, : self.cfg.height, : self.cfg.width]


class GridNeRV(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = nn.Parameter(torch.zeros(cfg.grid_t, cfg.channels[0], cfg.base_h, cfg.base_w))
        self.decoder = _Decoder(cfg)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.decoder(_lerp(self.grid, *_slots(t, self.cfg.grid_t)))


def _slots(t: torch.Tensor, tg: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two time slots nearest each t (slot centres at (i + 0.5) / Tg, clamped at the
    ends) and the weight of the second."""
    pos = (t * tg - 0.5).clamp(0, tg - 1)
    i0 = pos.floor().long().clamp(max=tg - 1)
    i1 = (i0 + 1).clamp(max=tg - 1)
    return i0, i1, pos - i0.to(pos.dtype)


def _lerp(slots: torch.Tensor, i0: torch.Tensor, i1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    w = w.view(-1, *([1] * (slots.dim() - 1)))
    return slots[i0] * (1 - w) + slots[i1] * w


class MlpNeRV(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.channels[0]
        self.fc1 = nn.Linear(2 * cfg.pe_freqs, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, c0 * cfg.base_h * cfg.base_w)
        self.decoder = _Decoder(cfg)
        freqs = torch.tensor([1.25**i * math.pi for i in range(cfg.pe_freqs)])
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t.view(-1, 1) * self.freqs
        x = torch.cat([torch.sin(a), torch.cos(a)], dim=1)
        x = F.gelu(self.fc2(F.gelu(self.fc1(x))))
        x = x.view(-1, self.cfg.channels[0], self.cfg.base_h, self.cfg.base_w)
        return self.decoder(x)


class GridWarpNeRV(GridNeRV):
    """GridNeRV whose frames are the decoder's output resampled by a global affine warp.

    warp[i] holds the offsets (a00, a01, a02, a10, a11, a12) from the identity of
    F.affine_grid's theta in normalised coordinates; all zeros reproduces the decoder's
    frame up to float rounding (< 1e-4: bilinear sampling at the pixel centres,
    align_corners=False). Pixels warped in from outside the frame repeat its border.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        self.warp = nn.Parameter(torch.zeros(cfg.grid_t, 6))
        self.register_buffer("identity", torch.tensor([1.0, 0, 0, 0, 1, 0]), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.apply_warp(self.unwarped(t), t, self.warp)

    def unwarped(self, t: torch.Tensor) -> torch.Tensor:
        """The decoder's frames before the warp (the encoder's motion search aligns them)."""
        return super().forward(t)

    def apply_warp(self, frames: torch.Tensor, t: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
        theta = (self.identity + _lerp(warp, *_slots(t, self.cfg.grid_t))).view(-1, 2, 3)
        where = F.affine_grid(theta, list(frames.shape), align_corners=False)
        return F.grid_sample(
            frames, where, mode="bilinear", padding_mode="border", align_corners=False
        )


BACKBONES: dict[str, type[nn.Module]] = {
    "grid": GridNeRV,
    "gridwarp": GridWarpNeRV,
    "nerv": MlpNeRV,
}
TEMPORAL_GRID = frozenset({"grid", "gridwarp"})  # backbones with Tg time slots


def build_model(cfg: BackboneConfig) -> nn.Module:
    try:
        return BACKBONES[cfg.name](cfg)
    except KeyError:
        raise ValueError(f"unknown backbone {cfg.name!r}; known: {sorted(BACKBONES)}") from None


# ------------------------------------------------------------------------------ sizing


def _base_grid(
    height: int, width: int, min_side: int = 4, max_stages: int = 6
) -> tuple[int, int, int]:
    """Halve until the smaller side of the base grid is about `min_side`: (stages, bh, bw)."""
    stages = 0
    while stages < max_stages and min(height, width) / 2 ** (stages + 1) >= min_side:
        stages += 1
    s = 2**stages
    return stages, math.ceil(height / s), math.ceil(width / s)


def _channels(c0: int, stages: int, decay: float = 0.8, c_min: int = 6) -> tuple[int, ...]:
    return tuple(max(c_min, round(c0 * decay**i)) for i in range(stages + 1))


def count_params(cfg: BackboneConfig) -> int:
    return sum(p.numel() for p in build_model(cfg).parameters())


def _config_for_width(
    name: str, height: int, width: int, c0: int, clip_length: int
) -> BackboneConfig:
    stages, bh, bw = _base_grid(height, width)
    chans = _channels(c0, stages)
    if name in TEMPORAL_GRID:
        grid_t = max(2, min(clip_length, math.ceil(clip_length / 2)))
        return BackboneConfig(name, height, width, bh, bw, chans, grid_t=grid_t)
    return BackboneConfig(name, height, width, bh, bw, chans, pe_freqs=8, mlp_hidden=max(16, c0))


def smallest_model(name: str, height: int, width: int, clip_length: int) -> int:
    """Parameters of the narrowest model of this backbone for this frame size."""
    return count_params(_config_for_width(name, height, width, 4, clip_length))


def config_for_budget(
    name: str, height: int, width: int, clip_length: int, params: int
) -> BackboneConfig:
    """The widest configuration whose parameter count stays within `params`."""
    size: Callable[[int], int] = lambda c: count_params(  # noqa: E731
        _config_for_width(name, height, width, c, clip_length)
    )
    lo, hi = 4, 4
    if size(lo) > params:
        raise ValueError(
            f"parameter budget {params} is too small for {width}x{height} "
            f"(the smallest {name} model has {size(lo)})"
        )
    while size(hi * 2) <= params and hi < 4096:
        hi *= 2
    hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) <= params:
            lo = mid
        else:
            hi = mid
    return _config_for_width(name, height, width, lo, clip_length)


def init_scale(name: str, tensor: torch.Tensor) -> float:
    """The uniform-init bound of a parameter tensor (PyTorch's default for conv/linear).

    Also the unit of its quantisation step (rqec.py): steps follow each layer's natural
    scale. Computed with IEEE-exact operations only (sqrt, division) so every machine
    derives identical steps.
    """
    if name.endswith("grid"):
        return 1.0
    if tensor.dim() == 1:  # bias: bound of its layer, fan_in passed via the weight below
        raise ValueError("bias scale needs its weight's fan-in")
    fan_in = tensor.shape[1] * (tensor[0, 0].numel() if tensor.dim() > 2 else 1)
    return 1.0 / math.sqrt(fan_in)


# The warp's scale is WARP_SCALE / max(H, W) in normalised coordinates (where 1 = half the
# frame), i.e. WARP_SCALE / 2 pixels at the frame's edge: at q_den 8 its quantisation step
# is 1/8 pixel of translation, or the rotation/zoom moving the edge by 1/8 pixel.
WARP_SCALE = 2.0


def param_scales(model: nn.Module) -> dict[str, float]:
    """init_scale for every parameter, biases taking their weight's fan-in."""
    named = dict(model.named_parameters())
    out: dict[str, float] = {}
    for name, p in named.items():
        if name == "warp":
            cfg: BackboneConfig = model.cfg  # type: ignore[assignment]
            out[name] = WARP_SCALE / max(cfg.height, cfg.width)
        elif name.endswith(".bias"):
            out[name] = init_scale(name, named[name[: -len("bias")] + "weight"])
        else:
            out[name] = init_scale(name, p)
    return out
