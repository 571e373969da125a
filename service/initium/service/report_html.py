"""The report for a person: one self-contained HTML page (no scripts, no network)."""

from __future__ import annotations

from html import escape

from initium.schemas.report import Report, TensorStats

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left;font-family:monospace}
.bad{background:#fdd}
"""


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _row(t: TensorStats) -> str:
    off = (
        t.expected_std is not None
        and t.std is not None
        and t.expected_std > 0
        and abs(t.std - t.expected_std) > 0.1 * t.expected_std
    )
    cells = [
        escape(t.name), escape(str(t.shape)), t.dtype, escape(t.scheme), escape(t.rule or ""),
        _fmt(t.expected_mean), _fmt(t.mean), _fmt(t.expected_std), _fmt(t.std),
        _fmt(t.min), _fmt(t.max), f"{t.zero_fraction:.3g}", str(t.nan_count + t.inf_count),
    ]  # fmt: skip
    cls = ' class="bad"' if off or t.nan_count or t.inf_count else ""
    return f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_report(report: Report) -> str:
    p = report.provenance
    head = [
        "tensor",
        "shape",
        "dtype",
        "scheme",
        "rule",
        "E[mean]",
        "mean",
        "E[std]",
        "std",
        "min",
        "max",
        "zeros",
        "NaN/Inf",
    ]
    rows = "\n".join(_row(t) for t in report.tensors)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>initium report {p.request_id[:12]}</title>
<style>{_STYLE}</style></head><body>
<h1>initium report</h1>
<p>request <code>{p.request_id}</code>, seed {p.seed}, {p.dtype}, {escape(p.algorithm.id)} v{p.algorithm.version},
device {escape(p.device)}; {report.totals.tensors} tensors, {report.totals.parameters:,} parameters,
{report.totals.bytes:,} bytes; sha256 <code>{report.artifact.sha256}</code>; {p.timings.total:.3f} s.</p>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{rows}
</tbody></table>
<p>Rows are highlighted when the measured std is more than 10% from the expected one, or values are not finite.</p>
</body></html>
"""
