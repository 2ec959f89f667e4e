"""Property tests of `.uarv` parsing and decoding against hostile input
(docs/reliability.md, "The bitstream").

Every input either decodes or raises `BitstreamError` whose message names the header
field or the clip; nothing else escapes, nothing hangs (pytest-timeout), and a declared
size never turns into an allocation of that size. The seed stream is encoded at test
time by the real encoder (tests/fuzz/uarv.py), so the properties follow the format as it
evolves.

The default run tries a few hundred inputs; the `@slow` twins (`make soak`) many more.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec.bitstream import (
    MAX_CHUNK_BODY,
    VERSION,
    BitstreamError,
    ClipChunk,
    StreamHeader,
    iter_chunks,
)
from core.codec.chain import decode_clip
from tests.fuzz.uarv import build_seed, check, reseal, split_stream

FAST, SOAK = 60, 2000
COUNTS: dict[str, int] = {}  # inputs tried per property, printed at the end of a soak run


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=n == FAST,  # the default suite is reproducible; soak runs explore
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_seed(tmp_path_factory.mktemp("uarv-seed"))


def _regions(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, expected message prefix) of the header and of each chunk."""
    header, chunks = split_stream(data)
    out = [(0, len(header), "header: ")]
    pos = len(header)
    for k, c in enumerate(chunks):
        out.append((pos, pos + len(c), f"clip {k}: "))
        pos += len(c)
    return out


def _prefix_at(data: bytes, pos: int) -> str:
    return next(p for a, b, p in _regions(data) if a <= pos < b)


def _count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


def test_seed_decodes(seed: bytes) -> None:
    assert check(seed) == "ok"
    assert len(_regions(seed)) == 4  # header + 3 clips


# ---------------------------------------------------------------- single-byte damage


def _flip_property(n: int) -> Callable[[bytes], None]:
    @_settings(n)
    @given(data=st.data())
    def prop(seed: bytes, data: st.DataObject) -> None:
        pos = data.draw(st.integers(0, len(seed) - 1), label="pos")
        value = data.draw(st.integers(0, 255).filter(lambda v: v != seed[pos]), label="value")
        bad = seed[:pos] + bytes([value]) + seed[pos + 1 :]
        _count("flip")
        msg = check(bad)
        # CRC32 catches every single-byte change: never "ok", never garbage frames, and
        # the error names the part that was damaged.
        assert msg != "ok"
        assert msg.startswith(_prefix_at(seed, pos)), (pos, msg)

    return prop


@pytest.mark.timeout(120)
def test_flipped_byte_is_caught_and_located(seed: bytes) -> None:
    _flip_property(FAST)(seed)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_flipped_byte_soak(seed: bytes) -> None:
    _flip_property(SOAK)(seed)


# ----------------------------------------------------------------------- truncation


@pytest.mark.timeout(120)
def test_every_truncation_is_caught_and_located(seed: bytes) -> None:
    """Exhaustive: every proper prefix of the stream is an error naming the right part
    (a prefix ending on a chunk boundary names the clip that is missing). Parsing alone
    finds truncation, so the prefixes are not rendered (rendering is covered above)."""
    for n in range(len(seed)):
        msg = check(seed[:n], render=False)
        _count("truncation")
        assert msg != "ok", n
        if n >= 9:  # the magic and version/length must be there to say more than "header"
            assert msg.startswith(_prefix_at(seed, n)), (n, msg)
        else:
            assert msg.startswith("header: "), (n, msg)


# ------------------------------------------------------- damage behind a valid CRC32


def _resealed_property(n: int) -> Callable[[bytes], None]:
    @_settings(n)
    @given(data=st.data())
    def prop(seed: bytes, data: st.DataObject) -> None:
        edits = data.draw(
            st.lists(
                st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)),
                min_size=1,
                max_size=6,
            ),
            label="edits",
        )
        bad = bytearray(seed)
        for pos, value in edits:
            bad[pos] = value
        cut = data.draw(st.none() | st.integers(0, len(seed)), label="truncate")
        mutated = reseal(bytes(bad[:cut] if cut is not None else bad))
        _count("resealed")
        check(mutated)  # only BitstreamError may escape; it must name header or clip

    return prop


@pytest.mark.timeout(300)
def test_resealed_mutations_only_raise_bitstream_error(seed: bytes) -> None:
    _resealed_property(FAST)(seed)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_resealed_mutations_soak(seed: bytes) -> None:
    _resealed_property(SOAK)(seed)


# --------------------------------------------------- hostile header and chunk fields

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
BACKBONE_VALUES = st.one_of(
    st.integers(-5, 20),
    st.integers(2**20, 2**40),
    st.sampled_from(["grid", "gridwarp", "nerv", "", "x"]),
    st.lists(st.integers(-2, 10**6), max_size=16),
    JSON,
)


def _backbone_property(n: int) -> Callable[[bytes], None]:
    @_settings(n)
    @given(data=st.data())
    def prop(seed: bytes, data: st.DataObject) -> None:
        head, chunks = split_stream(seed)
        header = StreamHeader.from_bytes(head)
        bb = dict(header.backbone)
        for _ in range(data.draw(st.integers(1, 4), label="n_edits")):
            key = data.draw(st.sampled_from([*bb, "bogus"]), label="key")
            if data.draw(st.booleans(), label="delete") and key in bb:
                del bb[key]
            else:
                bb[key] = data.draw(BACKBONE_VALUES, label="value")
        mutated = dataclasses.replace(header, backbone=bb).to_bytes() + b"".join(chunks)
        _count("backbone")
        msg = check(mutated)
        assert msg == "ok" or msg.startswith(("header: backbone config", "clip ")), msg

    return prop


@pytest.mark.timeout(300)
def test_hostile_backbone_config(seed: bytes) -> None:
    """The backbone config is JSON from the stream: bounded before any model is built
    (a header once asked for a 1.4 TB conv layer; see check_backbone)."""
    _backbone_property(FAST)(seed)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_hostile_backbone_config_soak(seed: bytes) -> None:
    _backbone_property(SOAK)(seed)


U32 = st.integers(0, 2**32 - 1)


def _chunk_field_property(n: int) -> Callable[[bytes], None]:
    @_settings(n)
    @given(data=st.data())
    def prop(seed: bytes, data: st.DataObject) -> None:
        head, chunks = split_stream(seed)
        header = StreamHeader.from_bytes(head)
        k = data.draw(st.integers(0, len(chunks) - 1), label="clip")
        c = ClipChunk.from_bytes(chunks[k], k)
        field = data.draw(
            st.sampled_from(["index", "first_frame", "frames", "key", "alpha", "q_den", "layers"]),
            label="field",
        )
        if field == "index":
            c = dataclasses.replace(c, index=data.draw(U32))
        elif field == "first_frame":
            c = dataclasses.replace(c, first_frame=data.draw(U32))
        elif field == "frames":
            c = dataclasses.replace(c, frames=data.draw(st.integers(0, 65535)))
        elif field == "key":
            c = dataclasses.replace(c, key=not c.key)
        elif field == "alpha":
            c = dataclasses.replace(c, alpha_num=data.draw(st.integers(0, 255)))
        elif field == "q_den":
            c = dataclasses.replace(c, q_den=data.draw(st.integers(0, 65535)))
        else:
            layers = list(c.layers)
            i = data.draw(st.integers(0, len(layers)), label="layer")
            m = data.draw(st.integers(0, 2**34), label="m")
            r = data.draw(st.integers(0, 65535), label="r")
            if i == len(layers):
                layers.append((m, r))
            elif data.draw(st.booleans(), label="drop"):
                del layers[i]
            else:
                layers[i] = (m, r)
            c = dataclasses.replace(c, layers=layers)
        chunks[k] = c.to_bytes()
        _count("chunk-field")
        msg = check(header.to_bytes() + b"".join(chunks))
        # A damaged field of clip k is reported as clip k (or a later clip whose chain
        # it broke); frames, key and alpha changes may also decode to other frames.
        if msg != "ok":
            assert msg.startswith("clip "), msg
            assert int(msg.split()[1].rstrip(":")) >= min(k, c.index), (k, msg)

    return prop


@pytest.mark.timeout(300)
def test_hostile_chunk_fields(seed: bytes) -> None:
    _chunk_field_property(FAST)(seed)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_hostile_chunk_fields_soak(seed: bytes) -> None:
    _chunk_field_property(SOAK)(seed)


# ------------------------------------------------------------- declared sizes, version


def _header_with(seed: bytes, **fields: int) -> bytes:
    """The seed's header with raw fixed fields replaced (CRC recomputed)."""
    head, _ = split_stream(seed)
    body = bytearray(head[9:-4])
    names = ["width", "height", "fps_num", "fps_den", "frames", "clip_len", "clips"]
    for name, v in fields.items():
        struct.pack_into("<I", body, 4 * names.index(name), v)
    pre = head[4:5] + struct.pack("<I", len(body)) + bytes(body)
    return b"UARV" + pre + struct.pack("<I", zlib.crc32(pre))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"width": 0}, "width 0"),
        ({"width": 2**32 - 1}, "width 4294967295"),
        ({"height": 16385}, "height 16385"),
        ({"frames": 0}, "frame count 0"),
        ({"frames": 2**32 - 1}, "frame count"),
        ({"clip_len": 0}, "clip length 0"),
        ({"clips": 7}, "clip count 7"),
        ({"fps_den": 0}, "frame rate"),
    ],
)
def test_header_field_out_of_range_is_named(seed: bytes, fields: dict, words: str) -> None:
    msg = check(_header_with(seed, **fields) + b"".join(split_stream(seed)[1]))
    assert msg.startswith("header: ") and words in msg, msg


def test_header_claiming_huge_frames_parses_without_rendering(seed: bytes) -> None:
    """16384x16384 is a legal header: parsing it allocates nothing of that size, and its
    chunks (made for 48x36) are refused by the backbone check, not rendered."""
    big = _header_with(seed, width=16384, height=16384)
    tracemalloc.start()
    try:
        header = StreamHeader.from_bytes(big)
        with pytest.raises(BitstreamError) as e:
            decode_clip(header, split_stream(seed)[1][0], None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith("header: backbone config: height 36 differs"), e.value
    assert peak < 32 * 2**20, peak


def test_wrong_version(seed: bytes) -> None:
    for v in (0, VERSION + 1, 255):
        pre = bytes([v]) + seed[5:]
        msg = check(reseal(b"UARV" + pre))
        assert msg == f"header: unsupported version {v} (this decoder reads 1, 2)"


@pytest.mark.parametrize("declared", [2**20 + 1, MAX_CHUNK_BODY, MAX_CHUNK_BODY + 1, 2**32 - 1])
def test_huge_declared_chunk_length_allocates_nothing(
    seed: bytes, tmp_path: Path, declared: int
) -> None:
    """A 4-byte length claiming up to 4 GiB in a tiny *file*: refused or reported as
    truncated, with memory proportional to the bytes that exist (read in pieces)."""
    head, chunks = split_stream(seed)
    bad = chunks[0][:2] + struct.pack("<I", declared) + chunks[0][6:]
    path = tmp_path / "bomb.uarv"
    path.write_bytes(head + bad)
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            header = StreamHeader.read(f)
            with pytest.raises(BitstreamError) as e:
                for c in iter_chunks(f, header):
                    decode_clip(header, c, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith("clip 0: "), e.value
    assert "exceeds" in str(e.value) or "truncated" in str(e.value)
    assert peak < 8 * 2**20, peak


def test_huge_declared_header_length(seed: bytes) -> None:
    data = seed[:5] + struct.pack("<I", 2**32 - 1) + seed[9:]
    assert check(data).startswith("header: header length 4294967295 exceeds")


def test_payload_not_words_names_the_clip(seed: bytes) -> None:
    head, chunks = split_stream(seed)
    c = ClipChunk.from_bytes(chunks[1], 1)
    chunks[1] = dataclasses.replace(c, payload=c.payload + b"\x00").to_bytes()
    assert check(head + b"".join(chunks)).startswith("clip 1: payload length")


def test_counts_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: how many inputs each property saw (docs/reliability.md)."""
    with capsys.disabled():
        print("\nbitstream fuzz inputs:", json.dumps(COUNTS, sort_keys=True))
    assert io is not None


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"channels": [100000] * 4}, "channels [100000, 100000, 100000, 100000] outside"),
        ({"channels": [-1, 8, 8, 8]}, "outside 1..16384"),
        ({"channels": []}, "is not a list of 1..13 integers"),
        ({"grid_t": 0}, "grid_t 0 is not an integer"),
        ({"grid_t": 10**9}, "grid_t 1000000000 is not an integer"),
        ({"base_h": 0}, "base_h 0 is not an integer"),
        ({"base_h": 1}, "base_h 1 x 8 does not cover the height"),
        ({"height": 5000}, "height 5000 differs from the stream's 36"),
        ({"name": "nerv"}, "pe_freqs 0 is not an integer in 1..64"),
        ({"name": "nerv", "pe_freqs": 8, "mlp_hidden": 10**6}, "parameters exceed"),
        ({"grid_t": True}, "grid_t True is not an integer"),
    ],
)
def test_backbone_regressions(seed: bytes, edit: dict, words: str) -> None:
    """Each of these once crashed (RuntimeError, IndexError, ZeroDivisionError) or tried
    to allocate up to 8 TB before check_backbone bounded the config."""
    head, chunks = split_stream(seed)
    header = StreamHeader.from_bytes(head)
    bad = dataclasses.replace(header, backbone={**header.backbone, **edit}).to_bytes()
    msg = check(bad + b"".join(chunks))
    assert msg.startswith("header: backbone config: ") and words in msg, msg


HINERV_OK = {"expand": 2, "kernel": 3, "grid_div": 4, "grid_t": 2, "grid_ch": [4, 0, 0]}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({**HINERV_OK, "expand": 10**6}, "extra.expand 1000000 is not an integer in 1..8"),
        ({**HINERV_OK, "kernel": 4}, "extra.kernel 4 is not odd"),
        ({**HINERV_OK, "grid_div": 0}, "extra.grid_div 0 is not an integer"),
        ({**HINERV_OK, "grid_ch": [4]}, "extra.grid_ch [4] is not a list of 3 integers"),
        ({**HINERV_OK, "grid_ch": [10**6, 0, 0]}, "outside 0..16384"),
        ({**HINERV_OK, "evil": 1}, "unknown keys ['evil']"),
        ({k: v for k, v in HINERV_OK.items() if k != "grid_t"}, "extra.grid_t None"),
    ],
)
def test_hinerv_extra_is_bounded(seed: bytes, extra: dict, words: str) -> None:
    head, chunks = split_stream(seed)
    header = StreamHeader.from_bytes(head)
    edit = {**header.backbone, "name": "hinerv", "channels": [8, 8, 8, 8], "extra": extra}
    bad = dataclasses.replace(header, backbone=edit).to_bytes()
    msg = check(bad + b"".join(chunks))
    assert msg.startswith("header: backbone config: ") and words in msg, msg


def test_extra_must_be_empty_for_other_backbones(seed: bytes) -> None:
    head, chunks = split_stream(seed)
    header = StreamHeader.from_bytes(head)
    bad = dataclasses.replace(header, backbone={**header.backbone, "extra": {"x": 1}}).to_bytes()
    msg = check(bad + b"".join(chunks))
    assert "extra {'x': 1} is not empty" in msg, msg
