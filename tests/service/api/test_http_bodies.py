"""Request bodies as clients expect (issue 16 item 13): malformed JSON is a 400 that says where, a body
that is not plain JSON is a 415 naming the type to send, and no error quotes more than an excerpt of
what it was sent."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.api.http import EXCERPT, MAX_MESSAGE, describe_validation_error
from initium.service.config import Settings
from tests.conftest import MLP_REQUEST

ROUTES = ("/v1/initializations", "/v1/plans", "/v1/presets", "/v1/reports")
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    # No lifespan: bodies are refused or planned in the request itself, no background task is needed.
    return TestClient(create_app(Settings(data_dir=tmp_path_factory.mktemp("bodies"), embedded_worker=False)))


def _error(response: Any, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == type_, error
    return error


@pytest.mark.parametrize("body", [b'{"spec": {"name": x}}', b'{\n  "spec": {\n    "name": "m",\n  }\n}', b'{"seed": 1'])
def test_malformed_json_is_a_400_that_says_where(client: TestClient, body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as reference:  # the standard library's own position
        json.loads(body)
    where = f"line {reference.value.lineno}, column {reference.value.colno} (character {reference.value.pos})"
    for route in ROUTES:
        error = _error(client.post(route, content=body, headers=JSON), 400, "invalid_json")
        assert where in error["message"] and error["loc"] == [], error


def test_a_body_in_no_utf_is_a_400_naming_the_byte(client: TestClient) -> None:
    error = _error(client.post("/v1/plans", content=b'{"a": "\xff"}', headers=JSON), 400, "invalid_json")
    assert "0xff at offset 7" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {"content-type": "application/xml"},
        {},  # no Content-Type at all
    ],
)
def test_a_body_that_is_not_json_is_a_415(client: TestClient, headers: dict[str, str]) -> None:
    body = json.dumps(MLP_REQUEST).encode()
    for route in ROUTES:
        error = _error(client.post(route, content=body, headers=headers), 415, "unsupported_media_type")
        assert "application/json" in error["message"]


def test_json_media_types_pass(client: TestClient) -> None:
    body = json.dumps(MLP_REQUEST).encode()
    for media_type in ("application/json", "application/json; charset=utf-8", "Application/JSON", "application/x+json"):
        assert client.post("/v1/plans", content=body, headers={"content-type": media_type}).status_code == 200


def test_a_ten_megabyte_text_body_is_refused_without_an_echo(client: TestClient) -> None:
    response = client.post("/v1/plans", content=b"x" * 10_000_000, headers={"content-type": "text/plain"})
    error = _error(response, 415, "unsupported_media_type")
    assert len(response.content) < 400 and "x" * 20 not in response.text, error
    assert error["message"] == "the body has Content-Type text/plain; send JSON with Content-Type: application/json"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "GZIP"])
def test_an_encoded_body_is_a_415(client: TestClient, coding: str) -> None:
    body = gzip.compress(json.dumps(MLP_REQUEST).encode())
    response = client.post("/v1/plans", content=body, headers={**JSON, "content-encoding": coding})
    error = _error(response, 415, "unsupported_media_type")
    assert "uncompressed" in error["message"] and response.headers["accept-encoding"] == "identity"
    identity = client.post("/v1/plans", json=MLP_REQUEST, headers={"content-encoding": "identity"})
    assert identity.status_code == 200


def test_errors_quote_an_excerpt_of_the_input(client: TestClient) -> None:
    request = copy.deepcopy(MLP_REQUEST)
    request["spec"]["name"] = "n" * 1_000_000  # valid JSON, an invalid name
    request["seed"] = "s" * 1_000_000
    error = _error(client.post("/v1/plans", json=request), 422, "validation_error")
    assert len(error["message"]) <= MAX_MESSAGE and "s" * (EXCERPT + 1) not in error["message"]
    assert "1,000,002 characters" in error["message"]  # the excerpt says how much it left out
    unknown = {**MLP_REQUEST, "k" * 1_000_000: 1}  # a key is input too: in the message and in loc
    error = _error(client.post("/v1/plans", json=unknown), 422, "validation_error")
    assert len(error["message"]) <= MAX_MESSAGE and all(len(str(part)) <= 2 * EXCERPT for part in error["loc"])


def test_describe_validation_error_caps_the_input() -> None:
    error = {"type": "string_too_long", "loc": ("body", "seed"), "msg": "too long", "input": "v" * 500}
    message, loc = describe_validation_error([error])
    assert message == f"seed: too long (got '{'v' * (EXCERPT - 1)}… (502 characters))" and loc == ["seed"]


def test_a_long_message_keeps_its_head_and_its_fix(tmp_path: Path) -> None:
    from initium.service.errors import RequestInvalidError

    app = create_app(Settings(data_dir=tmp_path, embedded_worker=False))

    @app.get("/long")
    def long() -> None:
        raise RequestInvalidError("what failed: " + ", ".join(f"t{i}" for i in range(10_000)) + "; the fix")

    message = TestClient(app).get("/long").json()["error"]["message"]
    assert len(message) <= MAX_MESSAGE and message.startswith("what failed: t0, ") and message.endswith("; the fix")
