"""A report for a request this server ran must equal the server's own (issue 16 item 11): a copy
with the artifact sha256 zeroed was kept, and the genuine report was then refused with 409 for good."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.config import Settings
from tests.conftest import MLP_REQUEST, wait_for_job


def run(client: TestClient, seed: int) -> tuple[str, dict[str, Any]]:
    """A real job of the README MLP on the session's worker: (id, its report)."""
    job = client.post("/v1/initializations", json=MLP_REQUEST | {"seed": seed}).json()
    done = wait_for_job(client, job["id"])
    assert done["state"] == "succeeded", done
    return job["id"], client.get(done["links"]["report"]).json()


def zeroed(report: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
    forged = copy.deepcopy(report)
    forged["artifact"]["sha256"] = "0" * 64
    if request_id is not None:
        forged["provenance"]["request_id"] = request_id
    return forged


def test_a_forged_report_of_a_job_this_server_ran_is_refused(app_client: TestClient) -> None:
    job_id, report = run(app_client, 1611)
    refused = app_client.post("/v1/reports", json=zeroed(report))
    error = refused.json()["error"]
    assert refused.status_code == 409 and error["type"] == "conflict" and error["loc"] == ["artifact", "sha256"]
    assert "differs from the one sent at artifact.sha256" in error["message"]
    accepted = app_client.post("/v1/reports", json=report)  # the genuine one: recorded when the job succeeded
    assert accepted.status_code == 200 and accepted.json()["sha256"] == report["artifact"]["sha256"]
    assert app_client.get(f"/v1/reports/{job_id}").json() == report
    timings = copy.deepcopy(report)
    timings["provenance"]["timings"]["total"] += 1.0
    assert app_client.post("/v1/reports", json=timings).json()["error"]["loc"] == ["provenance", "timings", "total"]


def test_a_report_posted_before_the_job_never_shadows_it(app_client: TestClient) -> None:
    _, model = run(app_client, 1612)
    job_id = app_client.post("/v1/plans", json=MLP_REQUEST | {"seed": 1613}).json()["request_id"]
    assert app_client.post("/v1/reports", json=zeroed(model, job_id)).status_code == 201  # no job yet: kept
    assert app_client.get(f"/v1/reports/{job_id}").json()["artifact"]["sha256"] == "0" * 64
    _, report = run(app_client, 1613)
    assert app_client.get(f"/v1/reports/{job_id}").json() == report  # the server's own from now on
    assert app_client.post("/v1/reports", json=report).status_code == 200
    assert app_client.post("/v1/reports", json=zeroed(report)).status_code == 409
    # The record itself now holds the server's report, so it outlives the job's eviction too.
    store = app_client.app.state.store  # type: ignore[attr-defined]
    assert store.artifacts.get_report(job_id) == app_client.get(f"/v1/reports/{job_id}").content


def test_until_the_job_succeeds_its_report_is_not_taken(tmp_path: Path, app_client: TestClient) -> None:
    _, model = run(app_client, 1614)
    with TestClient(create_app(Settings(data_dir=tmp_path, embedded_worker=False))) as client:
        queued = client.post("/v1/initializations", json=MLP_REQUEST | {"seed": 1615}).json()
        assert queued["state"] == "queued"
        posted = client.post("/v1/reports", json=zeroed(model, queued["id"]))
        error = posted.json()["error"]
        assert posted.status_code == 409 and error["type"] == "not_ready"
        assert "records its own report when the job succeeds" in error["message"]
        assert error["loc"] == ["provenance", "request_id"]
        assert client.get(f"/v1/reports/{queued['id']}").status_code == 409
