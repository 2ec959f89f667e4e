"""Whole-file encoding with independent chains trained side by side (--jobs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.codec.chain import plan_stream
from core.codec.files import chains, encode_file
from core.video import probe

from .conftest import TINY


@pytest.mark.parametrize(
    ("update", "jobs"),
    [({"key_interval": 2}, 2), ({"mode": "independent"}, 3)],
)
def test_parallel_chains_give_the_same_bytes(
    pens: Path, tmp_path: Path, update: dict, jobs: int
) -> None:
    opts = TINY.model_copy(update={**update, "frames": 16, "steps": 8})
    one = encode_file(pens, tmp_path / "one.uarv", opts)
    many = encode_file(pens, tmp_path / "many.uarv", opts, jobs=jobs)
    assert (tmp_path / "one.uarv").read_bytes() == (tmp_path / "many.uarv").read_bytes()
    assert [c["index"] for c in many["clips"]] == list(range(4))
    assert [c["psnr"] for c in one["clips"]] == [c["psnr"] for c in many["clips"]]


def test_chains_follow_the_groups(pens: Path) -> None:
    header = plan_stream(probe(pens), TINY.model_copy(update={"frames": 20}))
    assert header.num_clips == 5
    assert chains(header.num_clips, TINY) == [range(0, 5)]
    grouped = TINY.model_copy(update={"key_interval": 2})
    assert chains(header.num_clips, grouped) == [range(0, 2), range(2, 4), range(4, 5)]
    alone = TINY.model_copy(update={"mode": "independent"})
    assert chains(header.num_clips, alone) == [range(k, k + 1) for k in range(5)]


def test_jobs_must_be_positive(pens: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        encode_file(pens, tmp_path / "x.uarv", TINY, jobs=0)
