"""Hypothesis-generated policies through the real app's planner (POST /v1/plans): every request is
planned, or refused with a 4xx whose error names the field (`loc`); never a 5xx, never a bare error.

Scheme parameters are drawn from each scheme's own JSON Schema (GET /v1/schemes) but with the bounds
ignored, plus unknown keys and wrong types now and then, so valid and invalid policies both occur.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initium.schemas._module import ParameterizedType
from initium.schemas.catalog import scheme_catalog
from initium.schemas.policy import ParamRole
from initium.schemas.schemes import Nonlinearity
from tests.schemas.test_presets import ZOO

# The spec with every layer type (and so every role: gates, attention projections, blocks' roles).
SPEC = {"name": "zoo", "modules": ZOO}
TYPES = list(ParameterizedType.__args__)  # type: ignore[attr-defined]
ROLES = list(ParamRole.__args__)  # type: ignore[attr-defined]
PRESETS = ["kaiming-relu", "llama", "gpt2", "no-such-preset", "kaiming-relu@1", "kaiming-relu@99"]


def _loose(prop: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of roughly the property's type; bounds are ignored on purpose (invalid values test errors)."""
    if "$ref" in prop:
        return _loose(defs[prop["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in prop:
        return st.just(prop["const"])
    if "enum" in prop:
        return st.sampled_from(prop["enum"]) | st.sampled_from(list(Nonlinearity.__args__)) | st.text(max_size=4)  # type: ignore[attr-defined]
    if "anyOf" in prop:
        return st.one_of([_loose(p, defs) for p in prop["anyOf"]])
    kind = prop.get("type")
    if kind == "number":
        return st.floats(-10, 10, allow_nan=False) | st.sampled_from([0.0, -1.0, 1e-300, 1e300])
    if kind == "integer":
        return st.integers(-2, 64)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_loose(prop.get("items", {}), defs), max_size=3)
    if kind == "null":
        return st.none()
    return st.text(max_size=6)


def _init(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    props, defs = schema["properties"], schema.get("$defs", {})
    required = {k: _loose(props[k], defs) for k in schema.get("required", [])}
    optional = {k: _loose(v, defs) for k, v in props.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


inits = st.one_of([_init(s.params_schema) for s in scheme_catalog().schemes])
junk_keys = st.sampled_from(["scheme", "gain", "std", "mode", "bogus"])
junk_init = st.dictionaries(junk_keys, st.integers() | st.text(max_size=4))
matches = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES),
        "role": st.sampled_from(ROLES),
        "name": st.sampled_from(["*", "*.weight", "lstm.*", "mha.in_proj_*", "head.bias", "h.*.attn.*", "nothing", ""]),
    },
)
rules = st.fixed_dictionaries(
    {"match": matches, "init": inits | junk_init},
    optional={"fan_axes": st.fixed_dictionaries({"in_axes": st.lists(st.integers(-4, 4), max_size=2),
                                                 "out_axes": st.lists(st.integers(-4, 4), max_size=2)})},
)  # fmt: skip
policies = st.fixed_dictionaries(
    {"rules": st.lists(rules, max_size=4)},
    optional={
        "preset": st.sampled_from(PRESETS),
        "fan_convention": st.sampled_from(["initium", "torch", "keras"]),
        "lsuv": st.fixed_dictionaries(
            {}, optional={"target_std": st.floats(-1, 2), "max_iterations": st.integers(0, 3)}
        ),
    },
)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(policy=policies, seed=st.integers(-1, 2**64))
def test_random_policies_plan_or_name_the_field(
    app_client: TestClient, policy: dict[str, Any], seed: int, dtype: str
) -> None:
    response = app_client.post("/v1/plans", json={"spec": SPEC, "policy": policy, "seed": seed, "dtype": dtype})
    assert response.status_code in (200, 413, 422), response.text
    body = response.json()
    if response.status_code == 200:
        assert body["tensors"], body
        return
    error = body["error"]
    assert error["type"] and error["message"], body
    assert error["loc"], f"no field named for: {error['message']}"
    assert error["loc"][0] in ("spec", "policy", "seed", "dtype"), error
