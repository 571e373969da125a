"""The store: a corrupted artifact is never served, and eviction keeps size and age in bounds."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.errors import ArtifactCorruptError
from initium.service.jobs import submit as jobs
from initium.service.jobs.store import REPORT, WEIGHTS, JobStore
from initium.service.jobs.submit import VerifiedFiles, weights_file
from initium.service.plan.planner import make_plan
from tests.conftest import wait_for_job
from tests.service.pipeline.test_job import run_job


def test_a_tampered_artifact_fails_its_job_and_is_regenerated(
    app_client: TestClient, mlp_request: dict[str, Any]
) -> None:
    mlp_request["seed"] = 4242
    job_id = app_client.post("/v1/initializations", json=mlp_request).json()["id"]
    done = wait_for_job(app_client, job_id)
    store: JobStore = app_client.app.state.store  # type: ignore[attr-defined]
    good = app_client.get(done["links"]["weights"])
    assert good.status_code == 200
    path = store.artifact(job_id, WEIGHTS)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new version of the file
    corrupt = app_client.get(done["links"]["weights"])
    assert corrupt.status_code == 500 and corrupt.json()["error"]["type"] == "artifact_corrupt"
    assert app_client.get(f"/v1/initializations/{job_id}").json()["state"] == "failed"
    again = app_client.post("/v1/initializations", json=mlp_request)
    assert again.status_code == 202
    assert wait_for_job(app_client, job_id)["sha256"] == done["sha256"]
    assert app_client.get(done["links"]["weights"]).content == good.content


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_report_gone_from_the_store_fails_the_job_and_resubmitting_regenerates_it(
    app_client: TestClient, mlp_request: dict[str, Any], damage: str
) -> None:
    """The report's kind of fault is the weights': never a bare 500 internal_error."""
    mlp_request["seed"] = 4343 if damage == "missing" else 4344
    job_id = app_client.post("/v1/initializations", json=mlp_request).json()["id"]
    done = wait_for_job(app_client, job_id)
    store: JobStore = app_client.app.state.store  # type: ignore[attr-defined]
    kept = app_client.get(done["links"]["report"]).json()
    path = store.artifact(job_id, REPORT)
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    gone = app_client.get(done["links"]["report"])
    assert gone.status_code == 500 and gone.json()["error"]["type"] == "artifact_corrupt"
    assert app_client.get(done["links"]["report_html"]).status_code == 409  # failed now: resubmit
    assert app_client.get(f"/v1/initializations/{job_id}").json()["state"] == "failed"
    assert app_client.post("/v1/initializations", json=mlp_request).status_code == 202
    again = wait_for_job(app_client, job_id)
    assert again["sha256"] == done["sha256"]
    assert app_client.get(done["links"]["report"]).json()["artifact"] == kept["artifact"]


def test_a_file_is_hashed_once_per_version(tmp_path: Path, mlp_request: dict[str, Any]) -> None:
    store = JobStore(tmp_path)
    job_id = run_job(store, mlp_request)
    verified = VerifiedFiles()
    stored = weights_file(store, job_id, verified)
    path = store.artifact(job_id, stored.name)
    assert len(verified._seen) == 1 and stored.sha256 == store.records.load(job_id).sha256
    assert stored.size == path.stat().st_size
    weights_file(store, job_id, verified)
    assert len(verified._seen) == 1 and path.exists()
    path.unlink()
    with pytest.raises(ArtifactCorruptError):
        weights_file(store, job_id, verified)


def test_the_workers_stamp_spares_the_first_hash_until_the_file_changes(
    tmp_path: Path, mlp_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path)
    job_id = run_job(store, mlp_request)
    hashed: list[tuple[str, str]] = []
    monkeypatch.setattr(jobs, "_sha256_of", lambda _, job, name: hashed.append((job, name)) or "0" * 64)
    sha = weights_file(store, job_id, VerifiedFiles()).sha256
    assert hashed == [] and sha == store.records.load(job_id).sha256  # served on the worker's word
    path = store.artifact(job_id, WEIGHTS)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # touched: the stamp no longer holds
    with pytest.raises(ArtifactCorruptError):
        weights_file(store, job_id, VerifiedFiles())
    assert hashed == [(job_id, WEIGHTS)]


def _job(store: JobStore, seed: int, state: str = "succeeded") -> str:
    body = {"spec": {"name": "m", "modules": [{"type": "linear", "in_features": 64, "out_features": 64}]},
            "policy": {"preset": "xavier"}, "seed": seed}  # fmt: skip
    if state == "succeeded":
        return run_job(store, body)
    request = InitRequest.model_validate(body)
    plan = make_plan(request)
    store.create(request, plan, Progress(tensors_done=0, tensors_total=2, bytes_done=0, bytes_total=0))
    return plan.request_id


def test_eviction_by_age_and_size_spares_unfinished_jobs(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old, middle, recent = (_job(store, seed) for seed in (1, 2, 3))
    queued = _job(store, 4, state="queued")
    for job_id, age in ((old, 5000), (middle, 3000), (recent, 10)):
        stamp = time.time() - age
        os.utime(store.job_dir(job_id) / "job.json", (stamp, stamp))
    assert store.evict(None, 4000, time.time()) == [old]
    # Room for one job (the larger: reports differ by a few bytes of timings), not for two.
    size = max(sum(f.stat().st_size for f in store.job_dir(job).iterdir()) for job in (middle, recent))
    store.artifacts.touch(middle)  # just served: now the most recently used
    assert store.evict(size + 10, None, time.time()) == [recent]
    assert store.records.exists(middle) and store.records.exists(queued) and not store.records.exists(old)
