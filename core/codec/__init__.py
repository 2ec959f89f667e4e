"""The codec's public API: plan a stream, encode and decode it clip by clip (the clip
chain) or as whole files, and read streams. Words as in docs/method.md's glossary.

Names load on first use (PEP 562 `__getattr__`, the standard library's way; no lazy-import
package needed for this one table): the modules that train and render import torch, which
takes seconds, and `core.codec.options` must stay cheap for the API and `uarnvc --help`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.codec.bitstream import BitstreamError, ClipChunk, StreamHeader, read_stream
    from core.codec.chain import (
        ChainState,
        ClipResult,
        decode_clip,
        encode_clip,
        encode_clips,
        plan_stream,
    )
    from core.codec.files import decode_file, encode_file, iter_decode, stream_info
    from core.codec.model import BackboneConfig, register_backbone
    from core.codec.options import EncodeOptions
    from core.codec.report import ClipMetrics

_HOME = {
    "BitstreamError": "bitstream",
    "ClipChunk": "bitstream",
    "StreamHeader": "bitstream",
    "read_stream": "bitstream",
    "ChainState": "chain",
    "ClipResult": "chain",
    "decode_clip": "chain",
    "encode_clip": "chain",
    "encode_clips": "chain",
    "plan_stream": "chain",
    "decode_file": "files",
    "encode_file": "files",
    "iter_decode": "files",
    "stream_info": "files",
    "BackboneConfig": "model",
    "register_backbone": "model",
    "EncodeOptions": "options",
    "ClipMetrics": "report",
}

__all__ = [
    "BackboneConfig",
    "BitstreamError",
    "ChainState",
    "ClipChunk",
    "ClipMetrics",
    "ClipResult",
    "EncodeOptions",
    "StreamHeader",
    "decode_clip",
    "decode_file",
    "encode_clip",
    "encode_clips",
    "encode_file",
    "iter_decode",
    "plan_stream",
    "read_stream",
    "register_backbone",
    "stream_info",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:  # AttributeError lets `from core.codec import fit` import the module
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
