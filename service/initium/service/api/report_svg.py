"""Small inline SVG plots for the HTML report: no scripts, no network, readable without a browser plugin."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H, PAD = 560, 260, 46
_SVG_STYLE = (
    ".grid{stroke:#eee} text{font:11px sans-serif;fill:#444} .a{fill:none;stroke:#1f77b4;stroke-width:1.5} "
    ".b{fill:none;stroke:#d62728;stroke-width:1.5} .p{fill:#1f77b4;opacity:.7} .bad{fill:#d62728}"
)


def _log(v: float) -> float:
    return math.log10(max(v, 1e-300))


def _axis_ticks(lo: float, hi: float) -> list[int]:
    return list(range(math.floor(lo), math.ceil(hi) + 1))


def _frame(title: str, x_label: str, y_label: str, ylo: float, yhi: float, body: str) -> str:
    ticks = "".join(
        f'<line x1="{PAD}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        f'<text x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end">1e{t}</text>'
        for t in _axis_ticks(ylo, yhi)
        if ylo <= t <= yhi
        for y in [_y(t, ylo, yhi)]
    )
    return (
        f'<figure><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(title)}">'
        f"<style>{_SVG_STYLE}</style>"
        f'{ticks}<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>{body}'
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{escape(y_label)}</text>'
        f"</svg><figcaption>{escape(title)}</figcaption></figure>"
    )


def _y(v: float, lo: float, hi: float) -> float:
    return H - PAD - (v - lo) / max(hi - lo, 1e-9) * (H - PAD - 10)


def _x(v: float, lo: float, hi: float) -> float:
    return PAD + (v - lo) / max(hi - lo, 1e-9) * (W - PAD - 10)


def std_scatter(points: Sequence[tuple[str, float, float, bool]]) -> str:
    """Measured against expected std per tensor, log-log, with the diagonal; flagged tensors in red."""
    pts = [(n, _log(e), _log(m), bad) for n, e, m, bad in points if e > 0 and m > 0]
    if not pts:
        return ""
    lo = min(min(e, m) for _, e, m, _ in pts) - 0.2
    hi = max(max(e, m) for _, e, m, _ in pts) + 0.2
    x1, y1, x2, y2 = _x(lo, lo, hi), _y(lo, lo, hi), _x(hi, lo, hi), _y(hi, lo, hi)
    diagonal = f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#aaa" stroke-dasharray="4 3"/>'
    dots = "".join(
        f'<circle cx="{_x(e, lo, hi):.1f}" cy="{_y(m, lo, hi):.1f}" r="3" class="{"bad" if bad else "p"}">'
        f"<title>{escape(n)}: expected {10**e:.4g}, measured {10**m:.4g}</title></circle>"
        for n, e, m, bad in pts
    )
    return _frame("measured vs expected std per tensor (log-log; the dashed line is equality)",
                  "expected std", "measured std", lo, hi, diagonal + dots)  # fmt: skip


def depth_lines(names: Sequence[str], series: dict[str, Sequence[float | None]]) -> str:
    """One line per series (activation std, gradient std) across the layers, log scale."""
    values = [v for s in series.values() for v in s if v]
    if len(names) < 2 or not values:
        return ""
    lo, hi = _log(min(values)) - 0.2, _log(max(values)) + 0.2
    body = ""
    for css, (label, points) in zip(("a", "b"), series.items(), strict=False):
        coords = " ".join(
            f"{_x(i, 0, len(names) - 1):.1f},{_y(_log(v), lo, hi):.1f}" for i, v in enumerate(points) if v
        )
        body += f'<polyline points="{coords}" class="{css}"><title>{escape(label)}</title></polyline>'
    legend = "".join(
        f'<text x="{W - 14}" y="{20 + 14 * i}" text-anchor="end" class="{c}" style="fill:{col}">{escape(label)}</text>'
        for i, (label, c, col) in enumerate(zip(series, ("a", "b"), ("#1f77b4", "#d62728"), strict=False))
    )
    return _frame("signal scale across depth (probe batch)", f"layer (0 = {names[0]}, last = {names[-1]})",
                  "std", lo, hi, body + legend)  # fmt: skip
