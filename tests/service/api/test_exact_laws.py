"""Issue 15 over HTTP, against the real app: exact moments in the upper tail, a 422 for a value the
dtype cannot hold, and a report holding non-finite values that still serializes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from initium.schemas.report import Report
from initium.service.jobs.store import REPORT, JobStore
from tests.conftest import wait_for_job
from tests.service.plan.test_admissible import request


@pytest.mark.parametrize("path", ["/v1/plans", "/v1/initializations"])
def test_a_constant_float16_cannot_hold_is_refused(app_client: TestClient, path: str) -> None:
    """{"scheme": "constant", "value": 1e300} with float16 was accepted (202) and failed in the worker."""
    response = app_client.post(path, json=request({"scheme": "constant", "value": 1e300}, "float16"))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error" and error["loc"] == ["policy", "rules", 0, "init", "value"]
    assert "float16's range [-65504, 65504]" in error["message"]


def test_an_upper_tail_interval_plans_and_draws_its_exact_law(app_client: TestClient) -> None:
    """From a = 8.3 both endpoints answered 500; at a = 8 the plan said mean 7.583, outside [8, 9]."""
    body = request({"scheme": "truncated_normal", "a": 8.3, "b": 9}) | {"seed": 1515}
    planned = app_client.post("/v1/plans", json=body)
    assert planned.status_code == 200, planned.text
    weight = planned.json()["tensors"][0]
    assert (weight["expected_mean"], weight["expected_std"]) == (8.415711923064901, 0.11112337401673222)
    submitted = app_client.post("/v1/initializations", json=body)
    assert submitted.status_code == 202, submitted.text
    done = wait_for_job(app_client, submitted.json()["id"])
    assert done["state"] == "succeeded", done
    stats = app_client.get(done["links"]["report"]).json()["tensors"][0]
    assert stats["expected_mean"] == 8.415711923064901 and 8.3 <= stats["min"] <= stats["max"] <= 9


def _poison(report: dict[str, Any]) -> dict[str, Any]:
    """The report with non-finite values in plain float fields and optional ones alike."""
    tensor = report["tensors"][0]
    tensor |= {"expected_std": math.inf, "frobenius_norm": math.nan, "mean": -math.inf}
    if tensor.get("power_sums"):
        tensor["power_sums"] = tensor["power_sums"] | {"s2": math.inf}
    report["provenance"]["timings"]["total"] = math.nan
    return report


def test_a_report_holding_infinities_serializes(app_client: TestClient) -> None:
    """A report with infinities was stored with nulls in float fields: GET .../report answered 500."""
    submitted = app_client.post("/v1/initializations", json=request({"scheme": "normal"}) | {"seed": 1516})
    done = wait_for_job(app_client, submitted.json()["id"])
    kept = app_client.get(done["links"]["report"]).json()
    poisoned = Report.model_validate(_poison(kept))
    text = poisoned.model_dump_json()
    assert Report.model_validate_json(text).tensors[0].expected_std == math.inf  # the JSON round trip
    store: JobStore = app_client.app.state.store  # type: ignore[attr-defined]
    store.artifact(done["id"], REPORT).write_bytes(text.encode())
    served = app_client.get(done["links"]["report"])
    assert served.status_code == 200, served.text
    again = Report.model_validate_json(served.content)
    assert again.tensors[0].expected_std == math.inf and again.tensors[0].mean == -math.inf
    assert again.tensors[0].frobenius_norm is not None and math.isnan(again.tensors[0].frobenius_norm)
    assert math.isnan(again.provenance.timings.total)
    assert json.loads(served.text)["tensors"][0]["expected_std"] == math.inf  # Python's json (httpx) reads it too
    page = app_client.get(done["links"]["report"] + ".html")
    assert page.status_code == 200 and "initium report" in page.text  # the page draws what it can
    recorded = Client(http_client=app_client).record_report(again)  # type: ignore[arg-type]
    assert recorded.sha256 == again.artifact.sha256  # httpx's json= would refuse the NaN; the client sends tokens
