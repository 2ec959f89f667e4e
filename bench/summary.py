"""The markdown summary of an RD run, ready to paste into the README."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any


def _fmt(v: float | None, unit: str, digits: int) -> str:
    return "n/a" if v is None else f"{v:+.{digits}f}{unit}"


def _cell(d: dict[str, Any]) -> str:
    r, p = d["bd_rate_pct"], d["bd_psnr_db"]
    flag = "" if d.get("monotonic", True) else " †"
    spread = ""
    if r.get("seeds", 1) > 1 and r.get("min") is not None:
        spread = f" [{r['min']:+.1f}..{r['max']:+.1f}]"
    return f"{_fmt(r['value'], ' %', 1)}{spread} / {_fmt(p['value'], ' dB', 2)}{flag}"


def render_summary(results: dict[str, Any]) -> str:
    """BD table (clips x pairs, plus average) and every INR point, as markdown."""
    m, s = results["machine"], results["settings"]
    bd = results.get("bd", {})
    pairs = sorted({p for row in bd.get("per_clip", {}).values() for p in row}, key=_pair_order)
    lines = [
        "## Rate-distortion benchmark",
        "",
        f"`{m['command']}` on {m['cpu']} ({m['cpus']} CPUs), torch {m['torch']}, "
        f"{m['date'][:10]}, commit `{(m.get('git') or '?')[:12]}`. "
        f"First {s['frames']} frames at width {s['width']}, preset `{s['preset']}`, "
        f"quality ∈ {{{', '.join(f'{x:g}' for x in s['qualities'])}}}, "
        f"seeds {{{', '.join(str(x) for x in s['seeds'])}}}, device {s.get('device', 'cpu')}.",
        "",
        *(
            [
                f"INR points from `{m['resumed_from']['command']}` "
                f"({m['resumed_from']['date'][:16]}, commit "
                f"`{(m['resumed_from'].get('git') or '?')[:12]}`); classic sweeps, BD "
                "table and plots redone by the command above.",
                "",
            ]
            if m.get("resumed_from")
            else []
        ),
        *(f"- {n}" for n in results.get("notes", [])),
        "",
        "### BD-rate / BD-PSNR of `uar` against each anchor",
        "",
        "Negative BD-rate (fewer bits at equal PSNR) and positive BD-PSNR are wins for `uar`. "
        "Computed per seed (one curve per seed across the qualities) and averaged; with "
        "several seeds the range follows in brackets. n/a: the curves do not overlap "
        "(reason in rd.json). †: an INR curve in the pair is not monotonic; the polynomial "
        "fit is then unreliable: read the point tables below.",
        "",
    ]
    if pairs:
        anchors = [p.split(" vs ", 1)[1] for p in pairs]
        lines.append("| clip | " + " | ".join(f"vs {a}" for a in anchors) + " |")
        lines.append("|---" * (len(pairs) + 1) + "|")
        for clip, row in bd["per_clip"].items():
            cells = [_cell(row[p]) if p in row else "–" for p in pairs]
            lines.append(f"| {clip} | " + " | ".join(cells) + " |")
        avg = bd.get("average", {})
        cells = []
        for p in pairs:
            a = avg.get(p, {})
            r, q = a.get("bd_rate_pct", {}), a.get("bd_psnr_db", {})
            cells.append(
                f"{_fmt(r.get('value'), ' %', 1)} / {_fmt(q.get('value'), ' dB', 2)}"
                f" ({r.get('clips', 0)}/{q.get('clips', 0)} clips)"
            )
        lines.append("| **average** | " + " | ".join(cells) + " |")
    pw = [
        (clip, pair, cell["pointwise"])
        for clip, row in bd.get("per_clip", {}).items()
        for pair, cell in row.items()
        if "pointwise" in cell
    ]
    if pw:
        lines += [
            "",
            "### `uar` points against the classic curves (no fit through the INR points)",
            "",
            "rate ratio: `uar` bits / the codec's bits at the same PSNR (geometric mean over "
            "the `uar` points inside its PSNR range); ΔPSNR: `uar` minus the codec at the "
            "same rate. Classic curves interpolated linearly in log rate.",
            "",
            "| clip | pair | rate ratio | ΔPSNR dB | points |",
            "|---|---|---|---|---|",
        ]
        for clip, pair, d in pw:
            ratio = d["rate_ratio_mean"]
            lines.append(
                f"| {clip} | {pair} | {'n/a' if ratio is None else f'{ratio:.2f}x'} | "
                f"{_fmt(d['d_psnr_db_mean'], '', 2)} | {d['points'][0]}/{d['points'][1]} |"
            )
    same = [
        (clip, pair, d)
        for clip, row in bd.get("per_clip", {}).items()
        for pair, cell in row.items()
        for d in cell.get("same_point", [])
    ]
    if same:
        worse = [x for x in same if x[2]["worse"]]
        lines += [
            "",
            "### `uar` against the other INR modes at equal quality and seed",
            "",
            "ΔPSNR > 0 and rate ratio < 1 favour `uar`; **worse** marks a point where `uar` "
            f"has lower PSNR at an equal or higher rate ({len(worse)} of {len(same)} points).",
            "",
            "| clip | pair | quality | seed | ΔPSNR dB | rate ratio | |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {clip} | {pair} | {d['quality']:g} | {d['seed']} | {d['d_psnr_db']:+.2f} | "
            f"{d['rate_ratio']:.3f} | {'**worse**' if d['worse'] else ''} |"
            for clip, pair, d in same
        ]
    lines += _knob_and_spread(results)
    lines += [
        "",
        "### INR points",
        "",
        "| clip | size | mode | quality | seed | PSNR dB | bpp | I/P clips | params/model | s "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for clip, c in results["clips"].items():
        size = f"{c.get('frames')}×{c.get('width')}×{c.get('height')}"
        for mode, pts in c["curves"].items():
            if not pts or "quality" not in pts[0]:
                continue
            for p in pts:
                n = len(p["clips"])
                lines.append(
                    f"| {clip} | {size} | {mode} | {p['quality']:g} | {p['seed']} | "
                    f"{p['psnr']:.2f} | {p['bpp']:.4f} | {p['key_clips']}/{n - p['key_clips']} "
                    f"| {p['params']} | {p['seconds']:.0f} | {p['peak_rss_mb']:.0f} |"
                )
    lines += ["", "### Classic codecs (points used: see rd.json)", ""]
    lines += ["| clip | codec | PSNR range dB | bpp range | points |", "|---|---|---|---|---|"]
    for clip, c in results["clips"].items():
        for name, pts in c["curves"].items():
            if not pts or "quality" in pts[0]:
                continue
            q = [p["psnr"] for p in pts]
            r = [p["bpp"] for p in pts]
            lines.append(
                f"| {clip} | {name} | {min(q):.1f}–{max(q):.1f} | "
                f"{min(r):.3f}–{max(r):.3f} | {len(pts)} |"
            )
    lines.append("")
    return "\n".join(lines)


def _knob_and_spread(results: dict[str, Any]) -> list[str]:
    """The rate knob's span (bpp at the highest over the lowest quality, seed means) and
    whether PSNR rises with quality; the seed-to-seed PSNR spread at each setting."""
    knob = [
        "",
        "### The rate knob and seed-to-seed spread",
        "",
        "span: mean bpp at the highest quality / at the lowest; monotone: mean PSNR rises "
        "with quality; spread: max - min PSNR over the seeds at one quality.",
        "",
        "| clip | mode | span | monotone | spread per quality (dB) |",
        "|---|---|---|---|---|",
    ]
    for clip, c in results["clips"].items():
        for mode, pts in c["curves"].items():
            if not pts or "quality" not in pts[0]:
                continue
            qs = sorted({p["quality"] for p in pts})
            by_q = {q: [p for p in pts if p["quality"] == q] for q in qs}
            rate = [sum(p["bpp"] for p in by_q[q]) / len(by_q[q]) for q in qs]
            psnr = [sum(p["psnr"] for p in by_q[q]) / len(by_q[q]) for q in qs]
            mono = all(b > a for a, b in itertools.pairwise(psnr))
            spread = ", ".join(
                f"q{q:g}: {max(p['psnr'] for p in by_q[q]) - min(p['psnr'] for p in by_q[q]):.2f}"
                for q in qs
            )
            knob.append(
                f"| {clip} | {mode} | {rate[-1] / rate[0]:.2f}x | {'yes' if mono else 'no'} "
                f"| {spread} |"
            )
    return knob


def _pair_order(pair: str) -> tuple[int, str]:
    """INR baselines first, then classic codecs from oldest to newest."""
    order = ["independent", "whole", "x264", "x265", "x265-veryslow"]
    anchor = pair.split(" vs ", 1)[1]
    return (order.index(anchor) if anchor in order else len(order), anchor)


def write_summary(path: Path, results: dict[str, Any]) -> None:
    path.write_text(render_summary(results))
