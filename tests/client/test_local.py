"""Local mode against the service: the same bytes, the same errors, and its report kept on the
service for the record. Plus a resumed download against the real server's Range handling."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client, ConflictError, NotFoundError, RequestInvalidError, shard_slices
from initium.client._local import LocalClient
from tests.service.pipeline.test_job import GOLDEN_SHA256


@pytest.fixture
def local(tmp_path: Path) -> LocalClient:
    return Client.local(tmp_path / "local", device="cpu")


@pytest.fixture
def service(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


def test_local_bytes_equal_the_services(local: LocalClient, service: Client, mlp_request: dict[str, Any]) -> None:
    here = local.initialize(mlp_request)
    there = service.initialize(mlp_request)
    assert here.sha256 == there.sha256 == GOLDEN_SHA256
    assert hashlib.sha256(here.path.read_bytes()).hexdigest() == GOLDEN_SHA256
    assert here.report.provenance.request_id == there.report.provenance.request_id


def test_a_repeated_local_request_is_answered_from_its_store(local: LocalClient, mlp_request: dict[str, Any]) -> None:
    first = local.submit(mlp_request)
    again = local.submit(mlp_request)
    assert first.state == again.state == "succeeded" and again.attempts == 1 and again.sha256 == first.sha256


def test_local_errors_are_the_clients(local: LocalClient, mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"]["rules"].pop()  # biases left without a rule
    with pytest.raises(RequestInvalidError) as raised:
        local.submit(mlp_request)
    assert raised.value.status_code == 422 and raised.value.loc == ["policy", "rules"]
    with pytest.raises(NotFoundError):
        local.status("0" * 64)


def test_a_local_report_is_kept_on_the_service(
    local: LocalClient, service: Client, mlp_request: dict[str, Any], app_client: TestClient
) -> None:
    report = local.initialize({**mlp_request, "seed": 21}).report
    kept = service.record_report(report)
    assert kept.id == report.provenance.request_id and kept.sha256 == report.artifact.sha256
    assert app_client.get(kept.location).json() == report.model_dump(mode="json")
    assert service.record_report(report).id == kept.id  # again: 200, same record
    other = report.model_copy(update={"artifact": report.artifact.model_copy(update={"sha256": "f" * 64})})
    with pytest.raises(ConflictError, match="recorded with artifact"):
        service.record_report(other)
    # An id that is no request's sha256 is the body's fault (found by schemathesis: it was a 404).
    forged = report.model_dump(mode="json")
    forged["provenance"]["request_id"] = "job-1"
    refused = app_client.post("/v1/reports", json=forged)
    assert refused.status_code == 422
    assert refused.json()["error"]["loc"] == ["provenance", "request_id"]


def test_initialize_module_locally_on_the_meta_device(local: LocalClient) -> None:
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    result = local.initialize_module(model, policy={"preset": "kaiming-relu"}, seed=3)
    assert not any(p.is_meta for p in model.parameters())
    assert model[0].weight.data_ptr() == result.tensors["0.weight"].data_ptr() or torch.equal(
        model[0].weight, result.tensors["0.weight"]
    )


def test_a_dropped_download_resumes_against_the_real_server(
    service: Client, mlp_request: dict[str, Any], tmp_path: Path, app_client: TestClient
) -> None:
    """Half a file on disk (as a broken connection leaves it): the server's Range + If-Range
    handling sends the rest, and the whole verifies."""
    status = service.submit({**mlp_request, "seed": 22})
    status = service.wait(status.id)
    assert status.sha256 is not None and status.size is not None
    whole = tmp_path / "whole.safetensors"
    service.download(status.id, whole, status.sha256)
    target = tmp_path / "w.safetensors"
    (tmp_path / f".w.safetensors.{status.sha256[:16]}.part").write_bytes(whole.read_bytes()[: status.size // 2])
    answers: list[int] = []
    app_client.event_hooks["response"].append(lambda response: answers.append(response.status_code))
    try:
        service.download(status.id, target, status.sha256, status.size)
    finally:
        app_client.event_hooks["response"].pop()
    assert target.read_bytes() == whole.read_bytes()
    assert answers == [206]  # only the missing half was sent


def test_one_tensor_parallel_ranks_slices_are_that_part_of_the_whole(
    local: LocalClient, mlp_request: dict[str, Any]
) -> None:
    whole = local.initialize(mlp_request).tensors
    shapes = {t.name: t.shape for t in local.plan(mlp_request).tensors if t.name.endswith("weight")}
    for rank in range(2):
        part = local.initialize(mlp_request, slices=shard_slices(shapes, rank, world_size=2)).tensors
        assert torch.equal(part["fc1.weight"], whole["fc1.weight"].chunk(2, dim=0)[rank])
        assert torch.equal(part["fc2.weight"], whole["fc2.weight"].chunk(2, dim=0)[rank])
    with pytest.raises(ValueError, match=r"fc1\.weight \[512, 784\]"):
        shard_slices({"fc1.weight": [512, 784]}, 0, world_size=3)
