"""`python -m bench.seeds` end to end on a real clip, at a size where uar has one clip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.seeds import DATA, main

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (DATA / "pens.mp4").is_file(), reason=f"{DATA}/pens.mp4 not present")
def test_one_clip_video_gives_identical_modes(tmp_path: Path) -> None:
    # 8 frames < the 16-frame clip: uar and independent both code one I-model from the
    # same seed, so they must agree to the bit; a different seed must not.
    args = ["--clips", "pens", "--seeds", "0,1", "--frames", "8", "--width", "32"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "seeds.json").read_text())
    pairs = {p["seed"]: p for p in data["pairs"]}
    assert set(pairs) == {0, 1}
    for p in pairs.values():
        assert p["dpsnr"] == 0 and p["rate_ratio"] == 1
        assert p["uar"]["warp_trained"] == [False]
    assert pairs[0]["uar"]["psnr"] != pairs[1]["uar"]["psnr"]
    md = (tmp_path / "seeds.md").read_text()
    assert md.startswith("## uar against independent") and "| pens | 1 |" in md
