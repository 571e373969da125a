"""A 422's `loc` is the JSON path of the field in the request, never a pydantic union tag (issue 18)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from initium.schemas.locations import json_path
from initium.schemas.request import InitRequest
from initium.service.api.http import describe_validation_error

Path = tuple[str | int, ...]

# Every module kind that nests (sequential, repeat, residual body and shortcut, blocks), rules with
# every match field, a role list, and a scheme with parameters: the places a union tag can hide.
VALID: dict[str, Any] = {
    "spec": {
        "name": "net",
        "modules": [
            {"type": "linear", "name": "fc1", "in_features": 8, "out_features": 16},
            {"type": "sequential", "name": "seq", "modules": [{"type": "layer_norm", "normalized_shape": [16]}]},
            {"type": "repeat", "name": "rep", "count": 2, "block": {
                "type": "residual", "body": [{"type": "linear", "in_features": 16, "out_features": 16}],
                "shortcut": [{"type": "linear", "in_features": 16, "out_features": 16, "bias": False}],
            }},
            {"type": "transformer_block", "name": "blk", "d_model": 16, "n_heads": 2},
            {"type": "lstm", "name": "rnn", "input_size": 16, "hidden_size": 8},
        ],
    },
    "policy": {
        "preset": "torch-default",
        "rules": [
            {"match": {"type": "linear", "role": "weight", "name": "*fc1*"}, "init": {"scheme": "normal", "std": 0.02}},
            {"match": {"type": "lstm", "role": ["recurrent", "weight"]}, "init": {"scheme": "orthogonal", "gain": 1.0}},
        ],
    },
    "seed": 0,
}  # fmt: skip

# Values no field of the request takes where the mutation puts them.
_BAD_VALUES: tuple[Any, ...] = (-3, "not-a-value", {"bogus": 1}, [None])


def _paths(node: Any, at: Path = ()) -> Iterator[Path]:
    yield at
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, (*at, key))


def _mutations() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each field replaced by each bad value, each key deleted, an unknown key added to each object."""
    for path in _paths(VALID):
        if not path:
            continue
        for i, value in enumerate(_BAD_VALUES):
            yield f"{path} = bad[{i}]", _edited(path, lambda parent, key, v=value: parent.__setitem__(key, v))
        yield f"del {path}", _edited(path, lambda parent, key: parent.pop(key))
    for path in _paths(VALID):
        if isinstance(_at(VALID, path), dict):
            yield f"{path}.unknown", _edited((*path, "unknown_field"), lambda parent, key: parent.__setitem__(key, 1))


def _edited(path: Path, edit: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    edit(_at(body, path[:-1]), path[-1])
    return body


def _at(node: Any, path: Path) -> Any:
    for part in path:
        node = node[part]
    return node


def _refusals() -> list[tuple[str, dict[str, Any], list[Any]]]:
    refused = []
    for label, body in _mutations():
        try:
            InitRequest.model_validate(body)
        except ValidationError as exc:
            # FastAPI prefixes "body", as it does for every request body.
            refused.append((label, body, [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]))
    return refused


REFUSALS = _refusals()


def _assert_indexes(body: dict[str, Any], loc: list[str | int], missing: bool) -> None:
    node: Any = body
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if last and missing:
            assert isinstance(node, dict) and part not in node, f"{loc}: {part!r} should be the missing key"
            return
        if isinstance(node, dict):
            assert part in node, f"{loc}: {part!r} is not a key of the request at {loc[:i]}"
        else:
            assert isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node), f"{loc}[{i}]"
        node = node[part]


def test_the_fuzz_covers_nested_modules_and_rules() -> None:
    # Sanity on the generator: hundreds of refusals, with union tags in pydantic's locs to drop.
    assert len(REFUSALS) > 300
    tagged = [r for r in REFUSALS if any(p in ("tree", "linear", "residual", "orthogonal") for p in r[2][0]["loc"])]
    assert len(tagged) > 50


@pytest.mark.parametrize("label, body, errors", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_locates_a_field_of_the_request(label: str, body: dict[str, Any], errors: list[Any]) -> None:
    message, loc = describe_validation_error(errors, body)
    _assert_indexes(body, loc, missing=errors[0]["type"] == "missing")
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    assert message.startswith(f"{path}: ")
    if label.endswith(".unknown"):  # an unknown key is located exactly
        assert loc[-1] == "unknown_field" and _at(body, tuple(loc)) == 1


def test_the_readme_example_locates_in_features() -> None:
    body = copy.deepcopy(VALID)
    body["spec"]["modules"][0]["in_features"] = -784
    with pytest.raises(ValidationError) as exc:
        InitRequest.model_validate(body)
    pydantic_loc = exc.value.errors()[0]["loc"]
    assert pydantic_loc == ("spec", "tree", "modules", 0, "linear", "in_features")
    assert json_path(pydantic_loc, body, exc.value.errors()[0]["input"]) == ["spec", "modules", 0, "in_features"]


def test_a_tag_that_is_also_a_key_keeps_the_key() -> None:
    # {"type": "linear", "linear": 1}: the unknown key is named like the tag before it.
    body = copy.deepcopy(VALID)
    body["spec"]["modules"][0]["linear"] = 1
    with pytest.raises(ValidationError) as exc:
        InitRequest.model_validate(body)
    error = exc.value.errors()[0]
    assert json_path(error["loc"], body, error["input"]) == ["spec", "modules", 0, "linear"]


def test_a_loc_outside_the_document_comes_back_unchanged() -> None:
    assert json_path(["query", "limit"], {"spec": {}}) == ["query", "limit"]


def test_the_api_answers_the_json_path(app_client: TestClient) -> None:
    body = copy.deepcopy(VALID)
    body["spec"]["modules"][2]["block"]["body"][0]["out_features"] = 0
    answer = app_client.post("/v1/plans", json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["loc"] == ["spec", "modules", 2, "block", "body", 0, "out_features"]
    assert error["message"].startswith("spec.modules[2].block.body[0].out_features: ")
