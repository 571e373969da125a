"""The real client against the real app (in-process), its typed errors, and its torch helpers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import (
    APIConnectionError,
    Client,
    ConflictError,
    IntegrityError,
    NotFoundError,
    RequestInvalidError,
    RequestTooLargeError,
    ServerError,
    build_request,
)
from initium.client._errors import status_error
from initium.schemas import InitRequest
from initium.service.model.modules import build


@pytest.fixture
def client(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


def test_initialize_downloads_verifies_and_loads(client: Client, mlp_request: dict[str, Any], tmp_path: Path) -> None:
    result = client.initialize(mlp_request, path=tmp_path / "w.safetensors")
    assert hashlib.sha256(result.path.read_bytes()).hexdigest() == result.sha256 == result.status.sha256
    assert {k: list(v.shape) for k, v in result.tensors.items()} == {
        "fc1.weight": [512, 784], "fc1.bias": [512], "fc2.weight": [10, 512], "fc2.bias": [10],
    }  # fmt: skip
    module = build(InitRequest.model_validate(mlp_request).spec).to_empty(device="cpu")
    assert result.load_into(module) is module
    assert torch.equal(module[2].weight, result.tensors["fc2.weight"])
    copy = result.save(tmp_path / "copy.safetensors")
    assert copy.read_bytes() == result.path.read_bytes()
    assert result.report.tensors[0].std == pytest.approx((2 / 784) ** 0.5, rel=0.03)


def test_initialize_from_parts_matches_whole_request(client: Client, mlp_request: dict[str, Any]) -> None:
    whole = client.initialize(mlp_request)
    parts = client.initialize(spec=mlp_request["spec"], policy=mlp_request["policy"], seed=7, dtype="float32")
    assert parts.id == whole.id and parts.sha256 == whole.sha256


def test_load_into_is_strict(client: Client, mlp_request: dict[str, Any]) -> None:
    result = client.initialize(mlp_request)
    wrong = torch.nn.Sequential(torch.nn.Linear(784, 512))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        result.load_into(wrong)


def test_plan_through_the_client(client: Client, mlp_request: dict[str, Any]) -> None:
    plan = client.plan(mlp_request)
    assert [t.name for t in plan.tensors] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_typed_errors(client: Client, mlp_request: dict[str, Any]) -> None:
    with pytest.raises(NotFoundError) as not_found:
        client.status("0" * 64)
    assert not_found.value.status_code == 404 and not_found.value.loc == ["id"]
    mlp_request["policy"]["rules"].append({"init": {"scheme": "orthogonal"}})
    with pytest.raises(RequestInvalidError) as invalid:
        client.submit(mlp_request)
    assert invalid.value.loc == ["policy", "rules", 2, "init"] and "2 or more dimensions" in invalid.value.message


def test_client_side_validation_names_the_field(client: Client, mlp_request: dict[str, Any]) -> None:
    mlp_request["spec"]["modules"][0]["in_features"] = -1
    with pytest.raises(ValueError, match="in_features"):
        build_request(mlp_request)


def test_tampered_download_is_refused(client: Client, mlp_request: dict[str, Any], tmp_path: Path) -> None:
    status = client.wait(client.submit(mlp_request).id)
    target = tmp_path / "w.safetensors"
    with pytest.raises(IntegrityError, match="sha256"):
        client.download(status.id, target, "0" * 64)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_unreachable_server() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as c, pytest.raises(APIConnectionError, match="cannot reach"):
        c.status("0" * 64)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (404, NotFoundError),
        (409, ConflictError),
        (413, RequestTooLargeError),
        (422, RequestInvalidError),
        (503, ServerError),
    ],
)
def test_status_error_mapping(status: int, cls: type, tmp_path: Path) -> None:
    body = {"error": {"type": "x", "message": "m", "loc": ["a", 1]}}
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with (
        Client(
            "http://initium.test", http_client=httpx.Client(transport=transport, base_url="http://initium.test")
        ) as c,
        pytest.raises(cls) as info,
    ):
        c.status("0" * 64)
    assert info.value.status_code == status and info.value.loc == ["a", 1]
    assert isinstance(status_error(502, "<html>bad gateway</html>"), ServerError)


def test_presets_through_the_client(client: Client) -> None:
    preset = {
        "name": "client-house",
        "version": 3,
        "description": "published from the client",
        "rules": [{"init": {"scheme": "xavier_normal"}}],
    }
    published = client.publish_preset(preset)
    assert published.ref == "client-house@3"
    assert client.preset("client-house").version == 3
    assert "client-house" in {p.name for p in client.presets()}
    with pytest.raises(ConflictError):
        client.publish_preset({**preset, "description": "different"})
