"""`python -m bench.rd --quick` end to end on a real clip: the files exist and hold numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.rd import DATA, main

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (DATA / "pens.mp4").is_file(), reason=f"{DATA}/pens.mp4 not present")
def test_quick_run_on_pens(tmp_path: Path) -> None:
    assert (
        main(["--quick", "--clips", "pens", "--classic", "x264,x265", "--out", str(tmp_path)]) == 0
    )
    data = json.loads((tmp_path / "rd.json").read_text())
    png = tmp_path / "rd_pens.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "rd_summary.md").read_text().startswith("## Rate-distortion")
    curves = data["clips"]["pens"]["curves"]
    assert set(curves) == {"uar", "independent", "whole", "x264", "x265"}
    for name, pts in curves.items():
        assert len(pts) >= 2, name
        for p in pts:
            assert math.isfinite(p["psnr"]) and p["psnr"] > 5, (name, p)
            assert math.isfinite(p["bpp"]) and p["bpp"] > 0, (name, p)
    for p in curves["whole"]:
        budget = p["budget"]
        assert budget["whole_params_actual"] <= budget["whole_params_budget"]
        assert p["params"] == budget["whole_params_actual"]
    assert {(p["quality"], p["seed"]) for p in curves["uar"]} == {(3.0, 0), (7.0, 0)}
    bd = data["bd"]["per_clip"]["pens"]["uar vs independent"]
    assert bd["bd_rate_pct"]["value"] is None or math.isfinite(bd["bd_rate_pct"]["value"])
    assert data["machine"]["torch"] and data["machine"]["cpu"]
