"""The HTML report: self-contained, what it says about a probe that did not run, its tables and
plots. (In a real Chromium at 1400 and 390 px: test_report_page.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from initium.schemas.plan import Role, TensorDType
from initium.schemas.report import Propagation, Report, TensorStats
from initium.service.api.report_html import render_report, shape_text
from initium.service.api.report_svg import STYLE, linear_ticks, log_ticks, tick_label
from tests.conftest import wait_for_job


@pytest.fixture(scope="module")
def tanh_job(app_client: TestClient) -> str:
    """12 x (Linear(64, 64), Tanh) with N(0, 1) weights: saturating units, a warning, a probe that ran."""
    modules: list[dict[str, Any]] = []
    for _ in range(12):
        modules += [{"type": "linear", "in_features": 64, "out_features": 64}, {"type": "tanh"}]
    body = {"spec": {"name": "tanh-net", "modules": modules}, "policy": {"rules": [{"init": {"scheme": "normal"}}]}}
    job = app_client.post("/v1/initializations", json=body).json()
    assert wait_for_job(app_client, job["id"])["state"] == "succeeded"
    return str(job["id"])


@pytest.fixture(scope="module")
def report(app_client: TestClient, tanh_job: str) -> Report:
    return Client(http_client=app_client).report(tanh_job)  # type: ignore[arg-type]


@pytest.fixture
def page(app_client: TestClient, tanh_job: str, tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    Client(http_client=app_client).report_html(tanh_job, path)  # type: ignore[arg-type]
    return path


def test_the_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert "<script" not in html and not re.search(r'(src|href)="https?://', html)
    assert "Tanh units saturate" in html and "0.weight" in html
    # The std scatter, the depth lines and the 4 largest weights' histograms (all 64x64: the first 4).
    assert html.count("<svg") == 6 and html.count('aria-label="histogram of ') == 4
    assert 'aria-label="histogram of 0.weight against its law"' in html


def _verdict(report: Report, warnings: list[str], propagation: Propagation | None) -> str:
    html = render_report(report.model_copy(update={"warnings": warnings, "propagation": propagation}))
    return html.split("<h2>Checks</h2>", 1)[1].split("<h2>", 1)[0]


def test_a_skipped_probe_is_never_reported_as_finding_nothing(report: Report) -> None:
    skipped = Propagation(probe_shape=[], skipped="RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    verdict = _verdict(report, [], skipped)
    assert "found nothing" not in verdict and 'class="box ok"' not in verdict
    assert '<p class="box note">No tensor warnings' in verdict
    assert '<p class="box warn">Signal propagation skipped: RuntimeError: mat1 and mat2' in verdict
    # A report whose warnings already say it (as the pipeline now writes them) says it once.
    said = _verdict(report, [f"signal propagation skipped: {skipped.skipped}"], skipped)
    assert said.lower().count("propagation skipped") == 1 and "No tensor warnings" not in said


def test_the_green_box_needs_no_warnings_and_a_probe_that_ran_or_was_off(report: Report) -> None:
    assert report.propagation is not None and report.propagation.skipped is None
    ran = _verdict(report, [], report.propagation)
    assert '<p class="box ok">No warnings' in ran and "the probe found nothing to fix" in ran
    assert "Probe: 64 samples of shape 64" in ran
    off = _verdict(report, [], None)
    assert '<p class="box ok">No warnings' in off and "Signal propagation was off" in off and "found nothing" not in off
    warned = _verdict(report, ["0.weight: std 2x the scheme's"], report.propagation)
    assert 'class="box ok"' not in warned and '<p class="box warn">0.weight: std 2x' in warned


def _buffer(name: str, role: Role, value: float, dtype: TensorDType = "float32") -> TensorStats:
    return TensorStats(
        name=name, shape=[64] if role != "num_batches_tracked" else [], dtype=dtype, role=role,
        scheme=f"buffer:{role}", params=None, rule=None, fan_in=0, fan_out=0, expected_mean=None,
        expected_std=None, mean=value, std=0.0, min=value, max=value, abs_max=abs(value),
        zero_fraction=1.0 if value == 0 else 0.0, nan_count=0, inf_count=0,
    )  # fmt: skip


def test_buffers_fold_below_the_parameters(report: Report) -> None:
    buffers = [_buffer("bn.running_mean", "running_mean", 0.0), _buffer("bn.running_var", "running_var", 1.0),
               _buffer("bn.num_batches_tracked", "num_batches_tracked", 0.0, "int64")]  # fmt: skip
    html = render_report(report.model_copy(update={"tensors": [*report.tensors, *buffers]}))
    parameters, folded = html.split("<details>", 1)
    assert "bn.running_mean" not in parameters and "24 parameter tensors." in parameters
    assert folded.startswith("<summary>3 buffers (running_mean, running_var, num_batches_tracked)</summary>")
    scalar = '<td>bn.num_batches_tracked</td><td class="shape">scalar</td><td class="dtype">int64</td><td>0</td>'
    assert scalar in folded
    assert "<details>" not in render_report(report)  # no buffers, nothing to fold


def test_the_table_says_zeros_in_percent_and_shapes_compactly(report: Report) -> None:
    half = report.tensors[0].model_copy(update={"zero_fraction": 0.5, "shape": [512, 784]})
    html = render_report(report.model_copy(update={"tensors": [half, *report.tensors[1:]]}))
    head = html.split("<thead>", 1)[1].split("</thead>", 1)[0]
    columns = re.findall(r"<th[^>]*>([^<]*)</th>", head)
    assert columns[-1] == "zeros %" and "dtype" not in columns and "NaN/Inf" not in columns  # one dtype, all finite
    row = html.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert '<td class="shape">512\u00d7784</td>' in row and row.endswith("<td>50</td>")
    assert shape_text([]) == "scalar" and shape_text([64, 3, 7, 7]) == "64\u00d73\u00d77\u00d77"


def test_plots_have_round_ticks_and_legends_of_plain_text(report: Report) -> None:
    assert linear_ticks(0.0123, 0.987) == [0.2, 0.4, 0.6, 0.8]
    assert linear_ticks(-0.2, 0.2, 4) == [-0.2, -0.1, 0.0, 0.1, 0.2]
    assert log_ticks(1e-4, 0.3) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert log_ticks(0.018, 0.15) == [0.02, 0.05, 0.1]
    assert log_ticks(1e-12, 1e3) == [1e-12, 1e-9, 1e-6, 1e-3, 1.0, 1e3]  # every 3rd decade: at most 8
    labels = [tick_label(v) for v in (0.0, 0.05, -0.2, 2000.0, 1e-5, 2.5e6)]
    assert labels == ["0", "0.05", "-0.2", "2000", "1e-5", "2.5e6"]
    html = render_report(report)
    depth = html.split('aria-label="signal scale across depth"', 1)[1].split("</svg>", 1)[0]
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", depth)
    assert {"activation std", "gradient norm", "layer", "std, norm"} <= set(labels)  # the norm the warnings use
    numbers = [v for v in labels if re.fullmatch(r"-?[\d.]+(e-?\d+)?", v)]
    assert {"0", "2", "10"} <= set(numbers) and len(numbers) >= 6 + 3  # ticks on both axes (12 layers: 0 to 10 by 2)
    assert not re.search(r"<text[^>]*class=", html)  # text is styled as text only, never by a line's class
    assert report.propagation is not None  # a report from before per-example norms plots the gradient's std
    layers = [x.model_copy(update={"grad_norm": None}) for x in report.propagation.layers]
    older = render_report(
        report.model_copy(update={"propagation": report.propagation.model_copy(update={"layers": layers})})
    )
    assert ">gradient std</text>" in older and ">gradient norm</text>" not in older
    assert "svg.plot text{font:12px system-ui,sans-serif;fill:#444;stroke:none}" in STYLE
