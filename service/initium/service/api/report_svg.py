"""Small inline SVG plots for the HTML report: no scripts, no network, readable without a plugin.

Every plot has tick labels at round values on both axes (1, 2 or 5 times a power of ten: Heckbert's
"nice numbers", Graphics Gems, 1990), axis titles, and a legend whose text is text (filled, never
stroked). An axis is logarithmic where its data span a decade or more. The SVGs scale with the page
(a viewBox, width 100%), and their classes are styled once by the page with STYLE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from initium.schemas.report import Histogram

BLUE, RED = "#1f77b4", "#d62728"

STYLE = f"""
svg.plot{{width:100%;height:auto;display:block}}
svg.plot text{{font:12px system-ui,sans-serif;fill:#444;stroke:none}}
svg.plot .grid{{stroke:#e6e6e6}} svg.plot .axis{{stroke:#888}}
svg.plot .s0{{fill:none;stroke:{BLUE};stroke-width:1.6}} svg.plot .s1{{fill:none;stroke:{RED};stroke-width:1.6}}
svg.plot .dot0{{fill:{BLUE}}} svg.plot .dot1{{fill:{RED}}}
svg.plot .eq{{stroke:#999;stroke-dasharray:4 3}} svg.plot .bar{{fill:#a6cbe6;stroke:#fff;stroke-width:.5}}
svg.plot .flag{{fill:{RED}}} svg.plot .tensor{{fill:{BLUE};opacity:.75}}
"""


@dataclass(frozen=True)
class Axis:
    """One axis: its data range [lo, hi] (positive on a log axis), the tick values inside it, and its title."""

    lo: float
    hi: float
    ticks: tuple[float, ...]
    title: str
    log: bool = False

    def frac(self, v: float) -> float:
        """Where `v` sits along the axis: 0 at lo, 1 at hi."""
        if self.log:
            lo, hi, v = math.log10(self.lo), math.log10(self.hi), math.log10(max(v, 1e-300))
        else:
            lo, hi = self.lo, self.hi
        return (v - lo) / (hi - lo) if hi > lo else 0.5


def nice_step(span: float, count: int = 6) -> float:
    """The round step (1, 2 or 5 times a power of ten) giving about `count` intervals over `span`."""
    raw = span / count if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if raw <= m * magnitude * (1 + 1e-9))


def linear_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round values within [lo, hi], about `count` intervals apart."""
    step = nice_step(hi - lo, count)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [float(f"{k * step:.12g}") + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0"


def log_ticks(lo: float, hi: float) -> list[float]:
    """Between 3 and 8 round values within [lo, hi] (0 < lo < hi): powers of ten (every k-th over
    many decades), else 1-2-5 or 1..9 times them, else linear ticks for a range under a few percent."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    every = max(1, math.ceil((b - a) / 7))
    candidates = [[10.0**k for k in range(a, b + 1) if k % every == 0]]
    for multiples in ((1, 2, 5), range(1, 10)):
        candidates.append([float(f"{m * 10.0**k:.12g}") for k in range(a, b + 1) for m in multiples])
    for values in candidates:
        inside = [v for v in values if lo <= v <= hi]
        if 3 <= len(inside) <= 8:
            return inside
    return linear_ticks(lo, hi, 4)


def axis(values: Sequence[float], title: str, log: bool | None = None, zero: bool = False) -> Axis:
    """An axis over `values` with a margin: logarithmic when `log`, or (None) when they are positive
    and span a decade or more; `zero` starts a linear axis at 0 (counts)."""
    lo, hi = min(values), max(values)
    if log is None:
        log = lo > 0 and hi >= 10 * lo
    if log:
        pad = 10 ** (0.04 * max(math.log10(hi / lo), 0.5))
        lo, hi = lo / pad, hi * pad
        return Axis(lo, hi, tuple(log_ticks(lo, hi)), title, log=True)
    margin = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    lo, hi = (0.0 if zero else lo - margin), hi + margin
    return Axis(lo, hi, tuple(linear_ticks(lo, hi)), title)


def tick_label(v: float) -> str:
    """A tick value as short as it reads: 0.05, 2000, 1e-5, 2.5e+6 -> 2.5e6."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.6g}"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


@dataclass(frozen=True)
class Frame:
    """A plot's viewBox (w x h) and its plot area: the margins hold the legend (top), the tick
    labels and the axis titles (left, bottom)."""

    w: int = 400
    h: int = 270
    left: int = 62
    right: int = 12
    top: int = 30
    bottom: int = 44

    def px(self, x: Axis, y: Axis, vx: float, vy: float) -> tuple[float, float]:
        """The viewBox point of data point (vx, vy)."""
        return (self.left + x.frac(vx) * (self.w - self.left - self.right),
                self.h - self.bottom - y.frac(vy) * (self.h - self.top - self.bottom))  # fmt: skip


PLOT, SMALL = Frame(), Frame(w=310, h=220, left=60, bottom=42)


def _axes(f: Frame, x: Axis, y: Axis) -> str:
    """Grid lines and tick labels at each tick, the two axis lines, and the axis titles."""
    x0, y0 = f.px(x, y, x.lo, y.lo)
    x1, y1 = f.px(x, y, x.hi, y.hi)
    out = []
    for t in x.ticks:
        px = f.px(x, y, t, y.lo)[0]
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y1:.1f}" y2="{y0:.1f}" class="grid"/>'
                   f'<text x="{px:.1f}" y="{y0 + 16:.1f}" text-anchor="middle">{tick_label(t)}</text>')  # fmt: skip
    for t in y.ticks:
        py = f.px(x, y, x.lo, t)[1]
        out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
                   f'<text x="{x0 - 6:.1f}" y="{py + 4:.1f}" text-anchor="end">{tick_label(t)}</text>')  # fmt: skip
    out.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y0:.1f}" y2="{y0:.1f}" class="axis"/>'
               f'<line x1="{x0:.1f}" x2="{x0:.1f}" y1="{y1:.1f}" y2="{y0:.1f}" class="axis"/>')  # fmt: skip
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{f.h - 6}" text-anchor="middle">{escape(x.title)}</text>')
    mid = (y0 + y1) / 2
    out.append(f'<text x="14" y="{mid:.1f}" transform="rotate(-90 14 {mid:.1f})" text-anchor="middle">'
               f"{escape(y.title)}</text>")  # fmt: skip
    return "".join(out)


def _legend(f: Frame, entries: Sequence[tuple[str, str]]) -> str:
    """(label, swatch) pairs in a row above the plot area, so they never cover data. A swatch is a
    class: s0, s1 and eq draw a line, tensor and flag a dot, others a square. Labels are plain
    filled text; each entry takes room for its label at about 7 units a character."""
    out, x, y = [], float(f.left), 16
    for label, swatch in entries:
        if swatch in ("s0", "s1", "eq"):
            out.append(f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y - 4}" y2="{y - 4}" class="{swatch}"/>')
        elif swatch in ("tensor", "flag"):
            out.append(f'<circle cx="{x + 9:.1f}" cy="{y - 4}" r="3.5" class="{swatch}"/>')
        else:
            out.append(f'<rect x="{x + 3:.1f}" y="{y - 10}" width="12" height="12" class="{swatch}"/>')
        out.append(f'<text x="{x + 23:.1f}" y="{y}">{escape(label)}</text>')
        x += 23 + 7 * len(label) + 16
    return "".join(out)


def _figure(f: Frame, label: str, x: Axis, y: Axis, body: str, legend: Sequence[tuple[str, str]], caption: str) -> str:
    return (
        f'<figure style="flex-basis:{f.w}px;max-width:{f.w * 1.25:.0f}px"><svg class="plot" '
        f'viewBox="0 0 {f.w} {f.h}" width="{f.w}" height="{f.h}" role="img" aria-label="{escape(label)}">'
        f"{_axes(f, x, y)}{body}{_legend(f, legend)}</svg><figcaption>{caption}</figcaption></figure>"
    )


def std_scatter(points: Sequence[tuple[str, float, float, bool]]) -> str:
    """(name, expected std, measured std, flagged) per tensor: measured against expected, with the
    line of equality; flagged tensors in red. Empty when no tensor has both stds positive."""
    # Only finite positive stds can be placed: a report of an overflowed tensor may hold inf or NaN.
    pts = [(n, e, m, bad) for n, e, m, bad in points if 0 < e < math.inf and 0 < m < math.inf]
    if not pts:
        return ""
    x = axis([v for _, e, m, _ in pts for v in (e, m)], "expected std (the scheme's)")
    y = Axis(x.lo, x.hi, x.ticks, "measured std", x.log)
    (x0, y0), (x1, y1) = PLOT.px(x, y, x.lo, y.lo), PLOT.px(x, y, x.hi, y.hi)
    body = f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" class="eq"/>'
    for n, e, m, bad in pts:
        cx, cy = PLOT.px(x, y, e, m)
        body += (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.2" class="{"flag" if bad else "tensor"}">'
                 f"<title>{escape(n)}: expected {e:.4g}, measured {m:.4g}</title></circle>")  # fmt: skip
    legend = [("tensor", "tensor"), ("equality", "eq")] + ([("flagged", "flag")] if any(p[3] for p in pts) else [])
    caption = f"Measured against expected std, per weight and bias ({'log-log' if x.log else 'linear'})."
    return _figure(PLOT, "measured against expected std per tensor", x, y, body, legend, caption)


def depth_lines(names: Sequence[str], series: dict[str, Sequence[float | None]], y_title: str = "std") -> str:
    """One line per series (e.g. activation std, gradient norm) across the layers `names`, of their
    positive values; empty with fewer than two layers or no positive value."""
    series = {label: [v if v and math.isfinite(v) else None for v in s] for label, s in series.items()}
    values = [v for s in series.values() for v in s if v]
    if len(names) < 2 or not values:
        return ""
    last = len(names) - 1
    x = Axis(0.0, float(last), tuple(t for t in linear_ticks(0, last) if t == int(t)), "layer")
    y = axis(values, y_title)
    body = ""
    for i, (label, points) in enumerate(series.items()):
        xy = [(*PLOT.px(x, y, k, v), f"{names[k]}: {label} {v:.4g}") for k, v in enumerate(points) if v]
        body += f'<polyline points="{" ".join(f"{px:.1f},{py:.1f}" for px, py, _ in xy)}" class="s{i % 2}"/>'
        body += "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.2" class="dot{i % 2}"><title>{escape(tip)}</title>'
                        "</circle>" for px, py, tip in xy)  # fmt: skip
    legend = [(label, f"s{i % 2}") for i, label in enumerate(series)]
    caption = (f"Signal scale across depth on the probe batch ({'log' if y.log else 'linear'} scale): layer 0 is "
               f"<code>{escape(names[0])}</code>, layer {last} <code>{escape(names[-1])}</code>.")  # fmt: skip
    return _figure(PLOT, "signal scale across depth", x, y, body, legend, caption)


def histogram_plot(name: str, h: Histogram, caption: str) -> str:
    """Measured counts per bin as bars, the law's expected counts as a line through the bin centres."""
    width = (h.high - h.low) / len(h.counts)
    x = Axis(h.low, h.high, tuple(linear_ticks(h.low, h.high, 4)), "value")
    y = axis([0.0, max([*h.counts, *h.expected, 1])], "values per bin", log=False, zero=True)
    body = ""
    for i, count in enumerate(h.counts):
        left, top = SMALL.px(x, y, h.low + i * width, count)
        right, bottom = SMALL.px(x, y, h.low + (i + 1) * width, 0)
        body += f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}"'
        body += ' class="bar"/>'
    centres = [SMALL.px(x, y, h.low + (i + 0.5) * width, e) for i, e in enumerate(h.expected)]
    body += f'<polyline points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in centres)}" class="s1"/>'
    legend = [("measured", "bar"), ("law", "s1")]
    return _figure(SMALL, f"histogram of {name} against its law", x, y, body, legend, caption)
