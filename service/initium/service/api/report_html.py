"""The report for a person: one self-contained HTML page (no scripts, no network).

In reading order: what was made, the checks' verdict (warnings, and whether the signal-propagation
probe ran), the plots, the largest weights' histograms against their laws, then every parameter;
buffers (running_mean, running_var, num_batches_tracked) fold away below them. The page never
overflows sideways, from a 390 px phone to a desktop: plots scale down, the tables scroll in their
own box with the tensor names pinned, and shapes stay on one line (tests/service/api/test_report_page.py
holds this in headless Chromium).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from initium.schemas.report import Propagation, Report, TensorStats, depth_layers
from initium.schemas.wording import count
from initium.service.api.report_svg import STYLE as PLOT_STYLE
from initium.service.api.report_svg import depth_lines, histogram_plot, std_scatter

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;padding:0 2em;color:#222;max-width:1400px}
@media (max-width:700px){body{padding:0 12px;margin:1em auto}h1{font-size:1.6em}}
h2{margin:1.4em 0 .5em}code{font-size:13px}.hash{word-break:break-all}.meta{color:#444}
.box{padding:.5em 1em;margin:.3em 0;border-left:4px solid;overflow-wrap:anywhere}
.warn{background:#fff4d6;border-color:#e0a800}.ok{background:#e8f5e9;border-color:#43a047}
.note{background:#f2f4f7;border-color:#8a94a6}
.plots{display:flex;flex-wrap:wrap;gap:1em 1.5em}.plots figure{margin:0;flex:1 1 310px;min-width:0}
figcaption{font-size:12px;color:#555;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
td,th{padding:3px 6px;border-bottom:1px solid #e2e2e2;text-align:right;white-space:nowrap}
th{background:#f4f4f4;font-weight:600}
td:first-child,th:first-child{text-align:left;font-family:ui-monospace,monospace;position:sticky;left:0}
td:first-child{background:#fff}tr.bad td{background:#fdd}
.shape,.dtype,.scheme,.rule{text-align:left}td.rule{color:#666;font-size:12px}
details{margin:1em 0}summary{cursor:pointer;color:#333}
"""

# (header, what it means): the title shows on hover.
_PARAMETER_COLUMNS = (
    ("tensor", "the state_dict name"), ("shape", "the full tensor's shape"), ("dtype", ""),
    ("scheme", "the initialization drawn"), ("rule", "the policy rule that chose it"),
    ("E[mean]", "the scheme's mean"), ("mean", "measured"), ("E[std]", "the scheme's std"), ("std", "measured"),
    ("min", "measured"), ("max", "measured"),
    ("KS p", "Kolmogorov-Smirnov p-value against the scheme's law, on a strided sample"),
    ("‖W‖₂", "spectral norm of the [rows, rest] matrix"), ("cond", "condition number of that matrix"),
    ("zeros %", "percentage of values exactly 0"), ("NaN/Inf", "values not finite"),
)  # fmt: skip
# Text columns align left (numbers right); the class also keeps a shape on one line.
_TEXT_CLASS = {name: f' class="{name}"' for name in ("shape", "dtype", "scheme", "rule")}
_BUFFER_COLUMNS = (("tensor", ""), ("shape", ""), ("dtype", ""), ("value", "min to max, when they differ"))
_PARAMETER_ROLES = ("weight", "bias")


def _num(value: float | None) -> str:
    """Four significant digits; scientific notation (short exponent) outside [0.001, 10^5)."""
    if value is None:
        return ""
    if value == 0 or 1e-3 <= abs(value) < 1e5 or not math.isfinite(value):  # inf, -inf, nan as such
        return f"{value:.4g}"
    mantissa, exponent = f"{value:.3e}".split("e")
    return f"{float(mantissa):.4g}e{int(exponent)}"


def _percent(fraction: float) -> str:
    return "0" if fraction == 0 else f"{100 * fraction:.3g}"


def shape_text(shape: Sequence[int]) -> str:
    """A shape as it is written in prose, its sizes joined by the multiplication sign (512 by 784);
    a 0-d tensor is 'scalar'."""
    return "\u00d7".join(str(n) for n in shape) if shape else "scalar"


def _measured(t: TensorStats) -> list[int]:
    """The shape of what was measured: the slice's, when the request asked for one."""
    return t.shape if t.slice is None else [stop - start for start, stop in t.slice]


def _shape(t: TensorStats) -> str:
    return shape_text(t.shape) if t.slice is None else f"{shape_text(_measured(t))} of {shape_text(t.shape)}"


def _head(columns: Sequence[tuple[str, str]]) -> str:
    cells = "".join(
        f"<th{_TEXT_CLASS.get(label, '')}" + (f' title="{escape(tip)}"' if tip else "") + f">{label}</th>"
        for label, tip in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def _parameter_row(t: TensorStats, show: set[str]) -> str:
    cells = {
        "tensor": escape(t.name), "shape": _shape(t), "dtype": t.dtype, "scheme": escape(t.scheme),
        "rule": escape(t.rule or ""), "E[mean]": _num(t.expected_mean), "mean": _num(t.mean),
        "E[std]": _num(t.expected_std), "std": _num(t.std), "min": _num(t.min), "max": _num(t.max),
        "KS p": _num(t.fit.ks_pvalue if t.fit else None),
        "‖W‖₂": _num(t.spectral.spectral_norm if t.spectral else None),
        "cond": _num(t.spectral.condition_number if t.spectral else None),
        "zeros %": _percent(t.zero_fraction), "NaN/Inf": str(t.nan_count + t.inf_count),
    }  # fmt: skip
    bad = bool(t.flags or t.nan_count or t.inf_count)
    attrs = (' class="bad"' if bad else "") + (f' title="{escape("; ".join(t.flags))}"' if t.flags else "")
    tds = "".join(f"<td{_TEXT_CLASS.get(k, '')}>{v}</td>" for k, v in cells.items() if k in show)
    return f"<tr{attrs}>{tds}</tr>"


def _parameters(params: Sequence[TensorStats]) -> str:
    """The parameters' table. A dtype column only when they differ in dtype, a NaN/Inf column only
    when some value is not finite (the line above the table says which): the table fits 1400 px."""
    show = {label for label, _ in _PARAMETER_COLUMNS}
    if len({t.dtype for t in params}) <= 1:
        show.discard("dtype")
    if not any(t.nan_count or t.inf_count for t in params):
        show.discard("NaN/Inf")
    columns = [c for c in _PARAMETER_COLUMNS if c[0] in show]
    rows = "\n".join(_parameter_row(t, show) for t in params)
    return f'<div class="scroll"><table>{_head(columns)}<tbody>\n{rows}\n</tbody></table></div>'


def _buffers(buffers: Sequence[TensorStats]) -> str:
    """The buffers folded in a <details>: what they are named after and the value each holds."""
    if not buffers:
        return ""
    kinds = ", ".join(dict.fromkeys(t.name.rsplit(".", 1)[-1] for t in buffers))
    rows = "\n".join(
        f'<tr><td>{escape(t.name)}</td><td class="shape">{_shape(t)}</td><td class="dtype">{t.dtype}</td>'
        f"<td>{_value_range(t)}</td></tr>"
        for t in buffers
    )
    noun = "buffer" if len(buffers) == 1 else "buffers"
    return (
        f"<details><summary>{len(buffers)} {noun} ({escape(kinds)})</summary>"
        f'<div class="scroll"><table>{_head(_BUFFER_COLUMNS)}<tbody>\n{rows}\n</tbody></table></div></details>'
    )


def _value_range(t: TensorStats) -> str:
    if t.min is None or t.max is None:
        return ""
    return _num(t.min) if t.min == t.max else f"{_num(t.min)} to {_num(t.max)}"


def _verdict(report: Report) -> str:
    """The warnings, then the probe's state. The green box needs no warnings and a probe that ran
    or was not asked for; a probe that was skipped says so and why, never that it found nothing."""
    p = report.propagation
    boxes = [f'<p class="box warn">{escape(w)}</p>' for w in report.warnings]
    skipped = p is not None and p.skipped is not None
    # Reports since issue 15 carry the skip among their warnings; older ones only in `propagation`.
    if p is not None and p.skipped is not None and not any("propagation skipped" in w.lower() for w in report.warnings):
        boxes.append(f'<p class="box warn">Signal propagation skipped: {escape(p.skipped)}</p>')
    if not report.warnings:
        tensors = "every tensor matches its scheme's law"
        if p is None:
            boxes.insert(0, f'<p class="box ok">No warnings: {tensors}. Signal propagation was off: '
                            "report.propagation was \"off\", or the spec is a tensor manifest, which the probe "
                            "cannot run.</p>")  # fmt: skip
        elif skipped:
            boxes.insert(0, f'<p class="box note">No tensor warnings: {tensors}. The probe did not run (below).</p>')
        else:
            boxes.insert(0, f'<p class="box ok">No warnings: {tensors}, and the probe found nothing to fix.</p>')
    return "\n".join(boxes) + _probe(p)


def _probe(p: Propagation | None) -> str:
    if p is None or p.skipped is not None:
        return ""
    loss = "" if p.loss is None else f"; {escape(p.loss_name or 'loss')} at init {p.loss:.4g}"
    chance = "" if p.loss_at_chance is None else f" (log C = {p.loss_at_chance:.4g})"
    return f"\n<p>Probe: {p.probe_batch} samples of shape {shape_text(p.probe_shape)}{loss}{chance}.</p>"


def _plots(report: Report) -> str:
    points = [
        (t.name, t.expected_std, t.std, bool(t.flags))
        for t in report.tensors
        if t.expected_std is not None and t.std is not None and t.role in _PARAMETER_ROLES
    ]
    parts = [std_scatter(points), _depth(report.propagation)]
    figures = "".join(parts)
    return f'<h2>Plots</h2>\n<div class="plots">{figures}</div>' if figures else ""


def _depth(p: Propagation | None) -> str:
    """Activation and gradient scale across the layers the depth warnings compare (the residual
    stream between repeated blocks, else the weighted layers: schemas.report.depth_layers, as the
    worker's), with the gradient as they measure it: each example's norm where the report has
    it (since issue 15), else the batch's std."""
    if p is None or not p.layers:
        return ""
    layers = depth_layers(p.layers)
    names = [x.name for x in layers]
    activations: list[float | None] = [x.std for x in layers]
    if any(x.grad_norm for x in layers):
        return depth_lines(names, {"activation std": activations, "gradient norm": [x.grad_norm for x in layers]},
                           "std, norm")  # fmt: skip
    return depth_lines(names, {"activation std": activations, "gradient std": [x.grad_std for x in layers]})


def _histograms(report: Report) -> str:
    figures = []
    for t in report.tensors:
        h = t.histogram
        if h is None:
            continue
        size = math.prod(_measured(t))
        sample = f"all {h.n:,} values" if h.n >= size else f"{h.n:,} of {size:,} values, evenly strided"
        beyond = h.below + h.above
        # The expected counts cover the bins; what is left of n is what the law puts beyond them.
        law = h.n - sum(h.expected)
        outside = f"; {beyond:,} beyond the range (the law expects {law:.2g})" if beyond or law >= 0.5 else ""
        caption = f"<code>{escape(t.name)}</code> {shape_text(t.shape)}, {escape(t.scheme)}: {sample}{outside}."
        figures.append(histogram_plot(t.name, h, caption))
    if not figures:
        return ""
    # ± 4 std: summarize.histogram's SPAN (the API process does not import the worker's modules).
    return (
        "<h2>Values against their law</h2>\n<p>The largest weights: bars count the values in bins over the "
        "law's mean ± 4 std (within its support), the line is the law's expected count per bin.</p>\n"
        f'<div class="plots">{"".join(figures)}</div>'
    )


def _provenance(report: Report) -> str:
    prov, totals = report.provenance, report.totals
    stages = ", ".join(
        f"{name} {seconds:.2f} s"
        for name, seconds in prov.timings.model_dump().items()
        if name != "total" and seconds >= 0.005
    )
    return (
        f'<p class="meta">request <code class="hash">{prov.request_id}</code>; seed {prov.seed}, {prov.dtype}, '
        f"{escape(prov.algorithm.id)} v{prov.algorithm.version}, device {escape(prov.device)}.<br>"
        f"{count(totals.tensors, 'tensor')}, {count(totals.parameters, 'parameter')}, "
        f"{count(totals.bytes, 'byte')}; sha256 "
        f'<code class="hash">{report.artifact.sha256}</code>.<br>'
        f"{prov.timings.total:.2f} s ({stages}).</p>"
    )


def render_pending(job_id: str) -> str:
    """The page a browser gets while a job's report is computed after its weights (issue 17): it
    says the weights are ready, and reloads itself every two seconds until the report is there."""
    job = escape(job_id)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="2"><title>initium report {job[:12]} (pending)</title>
<style>{_STYLE}</style></head><body>
<h1>initium report</h1>
<div class="box note"><strong>Report pending.</strong> The weights of job <code class="hash">{job}</code> are
ready to download; their report (statistics and the signal-propagation probe) is still being computed.
This page reloads by itself.</div>
<p><a href="/v1/initializations/{job}">The job's status</a> links its files.</p>
</body></html>
"""


def render_report(report: Report) -> str:
    """The page for `report`: HTML5, its styles inline, no scripts and no external resources."""
    params = [t for t in report.tensors if t.role in _PARAMETER_ROLES]
    buffers = [t for t in report.tensors if t.role not in _PARAMETER_ROLES]
    finite = "" if report.totals.nan_count or report.totals.inf_count else " Every value is finite."
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>initium report {report.provenance.request_id[:12]}</title>
<style>{_STYLE}{PLOT_STYLE}</style></head><body>
<h1>initium report</h1>
{_provenance(report)}
<h2>Checks</h2>
{_verdict(report)}
{_plots(report)}
{_histograms(report)}
<h2>Tensors</h2>
<p>{count(len(params), "parameter tensor")}.{finite} Highlighted rows: measured moments beyond sampling error of the
scheme's (hover for why), or values not finite.</p>
{_parameters(params)}
{_buffers(buffers)}
</body></html>
"""
