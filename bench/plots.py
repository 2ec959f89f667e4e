"""RD plots (PSNR vs bpp) with matplotlib's Agg backend: files only, no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# INR modes get markers and solid lines; classic codecs thinner dashed lines.
STYLE: dict[str, dict[str, Any]] = {
    "uar": {"marker": "o", "lw": 2.0, "color": "tab:red"},
    "independent": {"marker": "s", "lw": 1.6, "color": "tab:blue"},
    "whole": {"marker": "^", "lw": 1.6, "color": "tab:green"},
    "x264": {"marker": ".", "lw": 1.0, "ls": "--", "color": "tab:gray"},
    "x265": {"marker": ".", "lw": 1.0, "ls": "--", "color": "tab:purple"},
    "x265-veryslow": {"marker": ".", "lw": 1.0, "ls": ":", "color": "tab:brown"},
    "svtav1 (yuv420p)": {"marker": ".", "lw": 1.0, "ls": "-.", "color": "tab:olive"},
}


def rd_plot(
    path: Path, title: str, curves: dict[str, list[dict[str, Any]]], note: str = ""
) -> None:
    """One PNG: every curve's (bpp, PSNR) points, log-rate axis (classic sweeps are wide)."""
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for name, pts in curves.items():
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p["bpp"])
        style = STYLE.get(name, {"marker": ".", "lw": 1.0, "ls": "--"})
        ax.plot([p["bpp"] for p in pts], [p["psnr"] for p in pts], label=name, **style)
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log)")
    ax.set_ylabel("RGB PSNR (dB, mean per frame)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, alpha=0.8)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def xy_plot(
    path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float]]]
) -> None:
    """A plain line plot, e.g. peak memory against video length per mode."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **STYLE.get(name, {}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
