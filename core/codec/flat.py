"""A model's parameters as one flat vector: the layout the training engine works in.

The training step keeps the residual, the frozen start and the per-element quantisation
steps each in a single contiguous tensor, so the quantiser, the rate term and the
optimiser are a handful of fused passes over one vector instead of a loop over layers
(docs/method.md, "Training engine"). `FlatLayout` records where each named parameter
lives in that vector; everything else in the codec keeps speaking `Params` (name ->
float32 array in the model's parameter order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from numpy.typing import DTypeLike

from core.codec.warmstart import Params


@dataclass(frozen=True)
class FlatLayout:
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, params: Params | dict[str, tuple[int, ...]]) -> FlatLayout:
        shapes = [tuple(v.shape) if hasattr(v, "shape") else tuple(v) for v in params.values()]
        return cls(tuple(params), tuple(shapes))

    @cached_property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s)) for s in self.shapes)

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def flatten(self, params: Params) -> np.ndarray:
        """One float32 vector in layout order."""
        return np.concatenate([np.asarray(params[n], np.float32).ravel() for n in self.names])

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        pos = 0
        for n, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            out[n] = flat[pos : pos + size].reshape(shape)
            pos += size
        return out

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views of a flat tensor (no copies; autograd flows through)."""
        parts = torch.split(flat, list(self.sizes))
        return {
            n: p.view(shape) for n, p, shape in zip(self.names, parts, self.shapes, strict=True)
        }

    def per_element(self, values: Sequence[float], dtype: DTypeLike = np.float32) -> np.ndarray:
        """One value per parameter tensor, repeated over its elements."""
        return np.repeat(np.asarray(values, dtype=dtype), self.sizes)

    def segment_ids(self) -> np.ndarray:
        """The index of each element's parameter tensor (int64)."""
        return np.repeat(np.arange(len(self.names), dtype=np.int64), self.sizes)
