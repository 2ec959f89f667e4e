"""INR backbones: a clip's frames as a function of (clip-normalised) time.

Every backbone maps times t in [0, 1) (frame j of a clip of nominal length L sits at
(j + 0.5) / L) to RGB frames. Its configuration is fully described by a small JSON-able
dict that travels in the stream header, so the decoder rebuilds the identical network.

Backbones are registered by name (`register_backbone`: the one list that the options,
the CLI and the stream reader read). ``nerv``, ``grid`` and ``gridwarp`` share the NeRV
decoder (conv 3x3 -> PixelShuffle(2) -> GELU blocks, a conv head, a crop to the exact
frame size so odd sizes work); ``hinerv`` is described at `HiNeRV`:

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
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args

import torch
from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from torch import nn
from torch.nn import functional as F

from core.codec.bitstream import MAX_SIDE
from core.codec.warp import grid_sample_border, sampling_grid

Resample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: its network and what its config holds."""

    module: type[nn.Module]  # built as module(cfg)
    time_slots: bool  # a latent grid of grid_t >= 1 time slots; else a PE + MLP stem
    decay: float  # channel decay per upsampling stage (measured in docs/method.md)
    extra: type[BaseModel] | None  # the type of the config's `extra`; None: always empty


BACKBONES: dict[str, Backbone] = {}  # the one list of backbone names: see register_backbone


def register_backbone(
    name: str, *, time_slots: bool, decay: float = 0.8, extra: type[BaseModel] | None = None
) -> Callable[[type[M]], type[M]]:
    """Class decorator: make a backbone known to the options, the CLI and the stream
    reader under `name` (a name is part of the format: docs/bitstream.md)."""

    def add(module: type[M]) -> type[M]:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        BACKBONES[name] = Backbone(module, time_slots, decay, extra)
        return module

    return add


# Bounds of a backbone config. A stream's header carries the config as JSON, so they are
# what a hostile header can ask for: checked before anything is allocated (a header once
# asked for a 1.4 TB conv layer; docs/reliability.md). The encoder's own sizes are far below.
MAX_CHANNELS = 16384
MAX_STAGES = 12
MAX_TIME_SLOTS = 4096
# Integers are strict: JSON's true or 2.0 is not a size.
Side = Annotated[int, Field(strict=True, ge=1, le=MAX_SIDE)]
Channels = Annotated[int, Field(strict=True, ge=1, le=MAX_CHANNELS)]


class HiNeRVExtra(BaseModel):
    """``hinerv``'s own settings (the config's ``extra``), see `HiNeRV`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expand: Annotated[int, Field(strict=True, ge=1, le=8)]
    kernel: Annotated[int, Field(strict=True, ge=1, le=7)]
    grid_div: Annotated[int, Field(strict=True, ge=1, le=64)]
    grid_t: Annotated[int, Field(strict=True, ge=1, le=MAX_TIME_SLOTS)]
    grid_ch: tuple[Annotated[int, Field(strict=True, ge=0, le=MAX_CHANNELS)], ...]

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"kernel {v} is not odd")
        return v

    @field_validator("grid_ch")
    @classmethod
    def _one_per_stage(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        stages = (info.context or {}).get("stages")
        if stages is not None and len(v) != stages:
            raise ValueError(f"grid_ch {_show(list(v))} is not a list of {stages} integers")
        return v


class BackboneConfig(BaseModel):
    """A backbone's configuration: what the stream header carries (as `to_dict`) so the
    decoder rebuilds the identical network. Validating it bounds every size (see above)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    height: Side
    width: Side
    base_h: Side
    base_w: Side
    # Channels at the base grid, then after each upsampling stage.
    channels: Annotated[tuple[Channels, ...], Field(min_length=1, max_length=MAX_STAGES + 1)]
    grid_t: Annotated[int, Field(strict=True, ge=0, le=MAX_TIME_SLOTS)] = 0  # time slots
    pe_freqs: Annotated[int, Field(strict=True, ge=0, le=64)] = 0  # positional encoding
    mlp_hidden: Annotated[int, Field(strict=True, ge=0, le=1 << 20)] = 0
    extra: dict[str, Any] = Field(default_factory=dict)  # the backbone's own (HiNeRVExtra)

    @property
    def stages(self) -> int:
        return len(self.channels) - 1

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in BACKBONES:
            raise ValueError(f"unknown backbone {_show(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BackboneConfig:
        spec = BACKBONES[self.name]
        up = 2**self.stages
        for base, side in (("base_h", "height"), ("base_w", "width")):
            if getattr(self, base) * up < getattr(self, side):
                raise ValueError(f"{base} {getattr(self, base)} x {up} does not cover the {side}")
        for needed in ("grid_t",) if spec.time_slots else ("pe_freqs", "mlp_hidden"):
            if getattr(self, needed) < 1:
                _, hi = _int_range(type(self).model_fields[needed])
                raise ValueError(f"{needed} 0 is not an integer in 1..{hi}")
        if spec.extra is None and self.extra:
            raise ValueError(f"extra {_show(self.extra)} is not empty for backbone {self.name}")
        if spec.extra is not None:
            try:
                spec.extra.model_validate(self.extra, context={"stages": self.stages})
            except ValidationError as e:
                raise ValueError(describe(e, spec.extra, self.extra, "extra.")) from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON the stream header carries."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        """The config from a header's JSON; ValueError naming the first bad field."""
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise ValueError(describe(e, cls, d)) from None


def _show(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _int_range(info: FieldInfo) -> tuple[int, int]:
    """The bounds of an integer field, or of the items of a tuple-of-integers field."""
    meta = info.metadata
    if not any(isinstance(m, Ge) for m in meta):
        (item, _) = get_args(info.annotation)
        meta = get_args(item)[1].metadata
    lo = next(m.ge for m in meta if isinstance(m, Ge))
    hi = next(m.le for m in meta if isinstance(m, Le))
    assert isinstance(lo, int) and isinstance(hi, int)
    return lo, hi


def describe(e: ValidationError, model: type[BaseModel], data: Any, prefix: str = "") -> str:
    """The first error of validating `data` as `model`, in the words of a stream reader:
    the field (under `prefix`), the value found and what was expected."""
    err = e.errors()[0]
    kind, loc = err["type"], err["loc"]
    if kind == "value_error":  # the validators' own messages start with their field
        return (prefix if loc else "") + str(err["ctx"]["error"])
    if kind == "extra_forbidden":
        unknown = sorted(set(data) - set(model.model_fields))
        return f"{prefix.rstrip('.') or 'config'} has unknown keys {unknown}"
    name = str(loc[0])
    field, value = model.model_fields[name], data.get(name)
    if kind == "dict_type":
        return f"{prefix}{name} is not an object"
    if len(loc) > 1:  # an item of a tuple
        lo, hi = _int_range(field)
        return f"{prefix}{name} {_show(value)} outside {lo}..{hi}"
    if kind in ("tuple_type", "too_short", "too_long"):
        short = next(m.min_length for m in field.metadata if isinstance(m, MinLen))
        long_ = next(m.max_length for m in field.metadata if isinstance(m, MaxLen))
        return f"{prefix}{name} {_show(value)} is not a list of {short}..{long_} integers"
    if field.annotation is int:
        lo, hi = _int_range(field)
        return f"{prefix}{name} {_show(value)} is not an integer in {lo}..{hi}"
    return f"{prefix}{name} {_show(value)}: {err['msg']}"


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


@register_backbone("grid", time_slots=True)
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
    # index_select, not slots[i0]: its backward is an index_add that PyTorch makes
    # deterministic on CUDA (advanced indexing's is an accumulating index_put).
    w = w.view(-1, *([1] * (slots.dim() - 1)))
    return slots.index_select(0, i0) * (1 - w) + slots.index_select(0, i1) * w


@register_backbone("nerv", time_slots=False)
class MlpNeRV(nn.Module):
    freqs: torch.Tensor  # a buffer: the positional encoding's frequencies

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


@register_backbone("gridwarp", time_slots=True)
class GridWarpNeRV(GridNeRV):
    """GridNeRV whose frames are the decoder's output resampled by a global affine warp.

    warp[i] holds the offsets (a00, a01, a02, a10, a11, a12) from the identity of
    F.affine_grid's theta in normalised coordinates; all zeros reproduces the decoder's
    frame up to float rounding (< 1e-4: bilinear sampling at the pixel centres,
    align_corners=False). Pixels warped in from outside the frame repeat its border.

    The training engine may hand `forward` a precomputed sampling grid (a frozen warp
    is the same for every step), the gather-based resampler (deterministic backward on
    CUDA, core/codec/warp.py), or `skip_warp` for a frozen identity warp.
    """

    identity: torch.Tensor  # a buffer: the identity affine map

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__(cfg)
        self.warp = nn.Parameter(torch.zeros(cfg.grid_t, 6))
        self.register_buffer("identity", torch.tensor([1.0, 0, 0, 0, 1, 0]), persistent=False)

    def forward(
        self,
        t: torch.Tensor,
        sampling: torch.Tensor | None = None,
        resample: Resample = grid_sample_border,
        skip_warp: bool = False,
    ) -> torch.Tensor:
        frames = self.unwarped(t)
        if skip_warp:
            return frames
        if sampling is None:
            sampling = self.sampling(t, self.warp, list(frames.shape))
        return resample(frames, sampling)

    def unwarped(self, t: torch.Tensor) -> torch.Tensor:
        """The decoder's frames before the warp (the encoder's motion search aligns them)."""
        return super().forward(t)

    def sampling(self, t: torch.Tensor, warp: torch.Tensor, size: list[int]) -> torch.Tensor:
        """Where each output pixel samples the unwarped frame at times t under `warp`."""
        theta = (self.identity + _lerp(warp, *_slots(t, self.cfg.grid_t))).view(-1, 2, 3)
        return sampling_grid(theta, size)

    def apply_warp(
        self,
        frames: torch.Tensor,
        t: torch.Tensor,
        warp: torch.Tensor,
        resample: Resample = grid_sample_border,
    ) -> torch.Tensor:
        return resample(frames, self.sampling(t, warp, list(frames.shape)))


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (align_corners=False, edges repeated), written as shifted
    weighted sums: F.interpolate's CUDA backward uses atomics and has no deterministic
    version, these slices and concatenations do. Equal to F.interpolate(x, scale_factor=2,
    mode="bilinear") to float rounding (tests/core/codec/test_model.py)."""

    def axis(x: torch.Tensor, dim: int) -> torch.Tensor:
        n = x.shape[dim]
        prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
        nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        shape = list(x.shape)
        shape[dim] = 2 * n
        return torch.stack([even, odd], dim + 1).reshape(shape)

    return axis(axis(x, 2), 3)


class _NeXtBlock(nn.Module):
    """ConvNeXt-style: depthwise kxk, then a 1x1 MLP (expand, GELU, project); the input's
    first `cout` channels are added back (channels shrink from stage to stage)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int) -> None:
        super().__init__()
        self.cout = cout
        self.dw = nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin)
        self.pw1 = nn.Conv2d(cin, cin * expand, 1)
        self.pw2 = nn.Conv2d(cin * expand, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(F.gelu(self.pw1(self.dw(x)))) + x[:, : self.cout]


@register_backbone("hinerv", time_slots=True, decay=0.7, extra=HiNeRVExtra)
class HiNeRV(nn.Module):
    """A HiNeRV-class backbone (Kwan et al., NeurIPS 2023) sized for small budgets.

    Time slots of a latent grid (as in `grid`) give the base feature map; each stage
    upsamples bilinearly by 2, adds a coarse temporal grid of its own (the hierarchical
    encoding: position- and time-specific features at every scale, for a few parameters
    and no convolution FLOPs) and refines with a ConvNeXt-style block; a 1x1 head gives
    RGB. Compared with NeRV's conv + PixelShuffle stages, most of the FLOPs at full
    resolution go away (depthwise + narrow 1x1), which is what decoding speed needs.
    extra: expand (MLP width factor), kernel (depthwise size), grid_ch (channels of each
    stage grid, 0 = none), grid_div (stage grids are this many times coarser than their
    stage), grid_t (time slots of the stage grids).
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ex = HiNeRVExtra.model_validate(cfg.extra)
        self.grid = nn.Parameter(torch.zeros(cfg.grid_t, cfg.channels[0], cfg.base_h, cfg.base_w))
        self.sizes = stage_sizes(cfg)
        self.blocks = nn.ModuleList(
            _NeXtBlock(cin, cout, ex.expand, ex.kernel)
            for cin, cout in zip(cfg.channels[:-1], cfg.channels[1:], strict=True)
        )
        gc = ex.grid_ch
        self.grids = nn.ParameterList(
            nn.Parameter(torch.zeros(ex.grid_t, c, *_coarse(hw, ex.grid_div)))
            for c, hw in zip(gc, self.sizes, strict=True)
            if c > 0
        )
        self.grid_at = [i for i, c in enumerate(gc) if c > 0]
        self.head = nn.Conv2d(cfg.channels[-1], 3, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = _lerp(self.grid, *_slots(t, self.cfg.grid_t))
        grids = dict(zip(self.grid_at, self.grids, strict=True))
        for i, (block, (h, w)) in enumerate(zip(self.blocks, self.sizes, strict=True)):
            x = upsample2(x)[:, :, :h, :w]
            g = grids.get(i)
            if g is not None:
                e = _lerp(g, *_slots(t, g.shape[0]))
                while e.shape[2] < h:
                    e = upsample2(e)
                e = e[:, :, :h, :w]
                x = torch.cat([x[:, : e.shape[1]] + e, x[:, e.shape[1] :]], 1)
            x = block(x)
        return self.head(x) + 0.5


def stage_sizes(cfg: BackboneConfig) -> list[tuple[int, int]]:
    """(h, w) after each upsampling stage: ceil(H / 2^(S-i)), the last one (H, W)."""
    s = cfg.stages
    return [
        (math.ceil(cfg.height / 2 ** (s - i)), math.ceil(cfg.width / 2 ** (s - i)))
        for i in range(1, s + 1)
    ]


def _coarse(hw: tuple[int, int], div: int) -> tuple[int, int]:
    """A stage grid's size: `div` times coarser than the stage, a power of two so that
    repeated x2 upsampling covers the stage exactly (then cropped)."""
    return math.ceil(hw[0] / div), math.ceil(hw[1] / div)


def build_model(cfg: BackboneConfig) -> nn.Module:
    try:
        return BACKBONES[cfg.name].module(cfg)
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


# HiNeRV's shape, fixed (only the width scales with the budget): see docs/method.md.
HINERV_SHAPE = {"expand": 2, "kernel": 3, "grid_div": 4}
HINERV_GRID_CH_MAX = 4  # channels of a stage grid at most


def _config_for_width(
    name: str, height: int, width: int, c0: int, clip_length: int
) -> BackboneConfig:
    stages, bh, bw = _base_grid(height, width)
    spec = BACKBONES[name]
    # The decay sets how the budget splits between coarse stages (cheap to run) and fine
    # ones (where the FLOPs are).
    chans = _channels(c0, stages, spec.decay)
    sizes: dict[str, Any] = {
        "name": name, "height": height, "width": width, "base_h": bh, "base_w": bw,
        "channels": chans,
    }  # fmt: skip
    if not spec.time_slots:
        return BackboneConfig(**sizes, pe_freqs=8, mlp_hidden=max(16, c0))
    grid_t = max(2, min(clip_length, math.ceil(clip_length / 2)))
    if name != "hinerv":
        return BackboneConfig(**sizes, grid_t=grid_t)
    # Stage grids on the inner stages only: at the outer ones a grid 4x coarser than the
    # frame would still cost more parameters than the whole decoder.
    grid_ch = tuple(
        min(HINERV_GRID_CH_MAX, c) if i < stages - 2 else 0 for i, c in enumerate(chans[:-1])
    )
    extra = HiNeRVExtra(**HINERV_SHAPE, grid_t=max(1, grid_t // 2), grid_ch=grid_ch)
    return BackboneConfig(**sizes, grid_t=grid_t, extra=extra.model_dump(mode="json"))


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
    if name.endswith("grid") or name.startswith("grids."):
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
