"""API keys, the body limit, spec limits, and nothing unpickled anywhere."""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.client import AuthenticationError, Client
from initium.service.api.app import create_app
from initium.service.api.security import hash_key
from initium.service.config import Settings

ROOT = Path(__file__).resolve().parents[3]
KEY = "ik_" + secrets.token_urlsafe(32)  # what `initium api-key` prints
DIGEST = hash_key(KEY)


@pytest.fixture
def guarded() -> Iterator[TestClient]:
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp()), embedded_worker=False, api_key_hashes=f"{hash_key('other')},{DIGEST}",
        max_body_bytes=4096, max_depth=5, max_modules=50,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def _plan_body(modules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"name": "m", "modules": modules}, "policy": {"preset": "xavier"}}


LINEAR = {"type": "linear", "in_features": 2, "out_features": 2}


def test_api_keys(guarded: TestClient) -> None:
    missing = guarded.post("/v1/plans", json=_plan_body([LINEAR]))
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["type"] == "unauthorized"
    wrong = guarded.post("/v1/plans", json=_plan_body([LINEAR]), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = guarded.post("/v1/plans", json=_plan_body([LINEAR]), headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert guarded.get("/v1/schemes", headers={"X-API-Key": KEY}).status_code == 200
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/metrics").status_code == 200


def test_the_client_sends_its_key(guarded: TestClient) -> None:
    assert Client(http_client=guarded, api_key=KEY).plan(_plan_body([LINEAR])).tensors
    with pytest.raises(AuthenticationError):
        Client(http_client=TestClient(guarded.app)).plan(_plan_body([LINEAR]))


def test_body_limit_by_header_and_while_streaming(guarded: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    big = b'{"spec": ' + b" " * 5000 + b"}"
    by_header = guarded.post("/v1/plans", content=big, headers=auth)
    assert by_header.status_code == 413 and "INITIUM_MAX_BODY_BYTES" in by_header.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"spec": '
        for _ in range(10):
            yield b" " * 1000
        yield b"}"

    streamed = guarded.post("/v1/plans", content=chunks(), headers=auth)
    assert streamed.status_code == 413


def test_spec_limits_name_the_limit(guarded: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    deep: dict[str, Any] = LINEAR
    for _ in range(6):
        deep = {"type": "sequential", "modules": [deep]}
    too_deep = guarded.post("/v1/plans", json=_plan_body([deep]), headers=auth)
    assert too_deep.status_code == 413 and "INITIUM_MAX_DEPTH" in too_deep.json()["error"]["message"]
    many = {"type": "repeat", "count": 60, "block": LINEAR}
    too_many = guarded.post("/v1/plans", json=_plan_body([many]), headers=auth)
    assert too_many.status_code == 413 and "INITIUM_MAX_MODULES" in too_many.json()["error"]["message"]


def test_json_nested_past_the_parser_is_a_clear_400(guarded: TestClient) -> None:
    body = '{"type": "relu"}'
    for _ in range(1500):
        body = '{"type": "sequential", "modules": [' + body + "]}"
    raw = '{"spec": {"name": "m", "modules": [' + body + ']}, "policy": {"preset": "xavier"}}'
    big = TestClient(create_app(Settings(data_dir=Path(tempfile.mkdtemp()), embedded_worker=False)))
    response = big.post("/v1/plans", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 413, 422) and "error" in response.json()


def test_nothing_is_unpickled_anywhere() -> None:
    """Weights travel as safetensors and everything else as JSON: no pickle, no torch.load."""
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.load|torch\.load\(|allow_pickle\s*=\s*True|cloudpickle")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("schemas", "client", "service")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
