"""The report for a person: one self-contained HTML page (no scripts, no network): warnings first,
then the plots, then every tensor."""

from __future__ import annotations

from html import escape

from initium.schemas.report import Propagation, Report, TensorStats
from initium.service.api.report_svg import depth_lines, std_scatter

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4;position:sticky;top:0}td:first-child,th:first-child{text-align:left;font-family:monospace}
.bad{background:#fdd}.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:.5em 1em;margin:.3em 0}
.ok{background:#e8f5e9;border-left:4px solid #43a047;padding:.5em 1em}figure{display:inline-block;margin:0 1em 1em 0}
figcaption{font-size:12px;color:#555}code{font-size:13px}
"""
_HEAD = ["tensor", "shape", "dtype", "scheme", "rule", "E[mean]", "mean", "E[std]", "std", "min", "max",
         "KS p", "‖W‖₂", "cond", "zeros", "NaN/Inf"]  # fmt: skip


_ACTIVATIONS = ("ReLU", "Tanh", "Sigmoid", "GELU", "SiLU", "SELU", "LeakyReLU")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _row(t: TensorStats) -> str:
    ks = t.fit.ks_pvalue if t.fit else None
    norm = t.spectral.spectral_norm if t.spectral else None
    cond = t.spectral.condition_number if t.spectral else None
    cells = [
        escape(t.name), escape(str(t.shape)), t.dtype, escape(t.scheme), escape(t.rule or ""),
        _fmt(t.expected_mean), _fmt(t.mean), _fmt(t.expected_std), _fmt(t.std), _fmt(t.min), _fmt(t.max),
        _fmt(ks), _fmt(norm), _fmt(cond), f"{t.zero_fraction:.3g}", str(t.nan_count + t.inf_count),
    ]  # fmt: skip
    cls = ' class="bad"' if t.flags or t.nan_count or t.inf_count else ""
    title = f' title="{escape("; ".join(t.flags))}"' if t.flags else ""
    return f"<tr{cls}{title}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _warnings(report: Report) -> str:
    if not report.warnings:
        return '<p class="ok">No warnings: every tensor matches its scheme and the probe found nothing to fix.</p>'
    return "".join(f'<p class="warn">{escape(w)}</p>' for w in report.warnings)


def _plots(report: Report) -> str:
    points = [
        (t.name, t.expected_std, t.std, bool(t.flags))
        for t in report.tensors
        if t.expected_std is not None and t.std is not None and t.role in ("weight", "bias")
    ]
    parts = [std_scatter(points)]
    p: Propagation | None = report.propagation
    if p is not None and p.layers:
        # With repeated blocks the residual stream between them is the depth signal (as the warnings use).
        blocks = [x for x in p.layers if x.type == "block"]
        weighted = blocks if len(blocks) >= 2 else [x for x in p.layers if x.type not in _ACTIVATIONS]
        parts.append(depth_lines([x.name for x in weighted], {
            "activation std": [x.std for x in weighted], "gradient std": [x.grad_std for x in weighted],
        }))  # fmt: skip
    return "".join(parts)


def _probe(p: Propagation | None) -> str:
    if p is None:
        return ""
    if p.skipped:
        return f"<p>Signal propagation skipped: {escape(p.skipped)}</p>"
    loss = "" if p.loss is None else f"; {escape(p.loss_name or '')} at init {p.loss:.4g}"
    chance = "" if p.loss_at_chance is None else f" (log C = {p.loss_at_chance:.4g})"
    return f"<p>Probe: {p.probe_batch} samples of shape {escape(str(p.probe_shape))}{loss}{chance}.</p>"


def render_report(report: Report) -> str:
    prov = report.provenance
    rows = "\n".join(_row(t) for t in report.tensors)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>initium report {prov.request_id[:12]}</title>
<style>{_STYLE}</style></head><body>
<h1>initium report</h1>
<p>request <code>{prov.request_id}</code>, seed {prov.seed}, {prov.dtype}, {escape(prov.algorithm.id)}
v{prov.algorithm.version}, device {escape(prov.device)}; {report.totals.tensors} tensors,
{report.totals.parameters:,} parameters, {report.totals.bytes:,} bytes; sha256
<code>{report.artifact.sha256}</code>; {prov.timings.total:.3f} s.</p>
<h2>Warnings</h2>
{_warnings(report)}
<h2>Plots</h2>
{_plots(report)}
{_probe(report.propagation)}
<h2>Tensors</h2>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in _HEAD)}</tr></thead>
<tbody>
{rows}
</tbody></table>
<p>Highlighted rows: measured moments beyond sampling error of the scheme's (hover for why), or values not finite.</p>
</body></html>
"""
