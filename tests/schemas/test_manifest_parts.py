"""Manifest parts: a fused tensor's blocks are checked against its shape, and every refusal names the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from initium.schemas import InitRequest
from initium.schemas.spec import ManifestTensor

C_ATTN = {"name": "h.0.attn.c_attn.weight", "shape": [256, 768], "module_type": "linear", "fan_in": 256, "fan_out": 768}
QKV = {"axis": 1, "sizes": [256, 256, 256], "roles": ["query", "key", "value"]}


def test_gpt2_c_attn_parts_validate() -> None:
    tensor = ManifestTensor.model_validate({**C_ATTN, "parts": QKV})
    assert tensor.parts is not None and tensor.parts.axis == 1 and tensor.parts.roles == ["query", "key", "value"]
    assert ManifestTensor.model_validate(C_ATTN).parts is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"parts": {**QKV, "axis": 2}}, "parts.axis 2 is not a dimension of shape [256, 768]; use 0..1"),
        ({"parts": {**QKV, "sizes": [256, 256, 128]}}, "parts.sizes sum to 640 but shape[1] is 768"),
        ({"parts": {**QKV, "sizes": [384, 384]}}, "parts.roles has 3 entries for 2 sizes"),
        ({"module_type": "multihead_attention", "parts": QKV}, "parts: module_type 'multihead_attention' already"),
        ({"module_type": "lstm", "parts": QKV}, "parts: module_type 'lstm'"),
        ({"role": "running_mean", "parts": QKV}, "parts: a running_mean buffer"),
        ({"shape": [], "parts": {**QKV, "axis": 0}}, "a scalar has none to split"),
    ],
)
def test_inconsistent_parts_are_refused_naming_the_field(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ManifestTensor.model_validate({**C_ATTN, **change})
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("parts", "loc_tail"),
    [
        ({**QKV, "axis": -1}, ("parts", "axis")),
        ({**QKV, "sizes": [768], "roles": ["query"]}, ("parts", "sizes")),
        ({**QKV, "sizes": [0, 384, 384]}, ("parts", "sizes", 0)),
        ({**QKV, "roles": ["query", "key", "bogus"]}, ("parts", "roles", 2)),
        ({**QKV, "block": 3}, ("parts", "block")),
    ],
)
def test_malformed_parts_carry_their_json_path(parts: dict[str, Any], loc_tail: tuple[Any, ...]) -> None:
    body = {"spec": {"name": "m", "tensors": [{**C_ATTN, "parts": parts}]}, "policy": {"preset": "gpt2"}}
    with pytest.raises(ValidationError) as info:
        InitRequest.model_validate(body)
    locs = [tuple(e["loc"]) for e in info.value.errors()]
    assert any(loc[-len(loc_tail) :] == loc_tail for loc in locs), locs


def test_request_errors_locate_the_tensor() -> None:
    bad = {**C_ATTN, "parts": {**QKV, "sizes": [256, 256, 255]}}
    body = {"spec": {"name": "m", "tensors": [C_ATTN | {"name": "a"}, bad]}, "policy": {"preset": "gpt2"}}
    with pytest.raises(ValidationError) as info:
        InitRequest.model_validate(body)
    (error,) = info.value.errors()
    assert error["loc"] == ("spec", "manifest", "tensors", 1) and "parts.sizes" in error["msg"]
