"""The request models accept what torch accepts and refuse the rest with the field's JSON path."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from initium.schemas import InitRequest, Spec
from initium.schemas.schemes import SCHEME_MODELS


def test_design_example_validates(mlp_request: dict[str, Any]) -> None:
    request = InitRequest.model_validate(mlp_request)
    assert [m.type for m in request.spec.modules] == ["linear", "relu", "linear"]
    assert request.seed == 7 and request.dtype == "float32"


def _spec_error(modules: list[dict[str, Any]]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        Spec.model_validate({"name": "m", "modules": modules})
    error: dict[str, Any] = info.value.errors()[0]
    return error


@pytest.mark.parametrize(
    ("module", "loc_tail", "fragment"),
    [
        ({"type": "linear", "in_features": -1, "out_features": 3}, ("linear", "in_features"), "greater than 0"),
        ({"type": "linear", "in_features": 2, "out_features": 3, "bogus": 1}, ("linear", "bogus"), "Extra inputs"),
        ({"type": "linear", "in_features": 2}, ("linear", "out_features"), "Field required"),
        (
            {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2},
            ("conv2d",),
            "divisible",
        ),
        ({"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [3, 3, 3]}, ("conv2d",), "list of 2"),
        (
            {"type": "conv1d", "in_channels": 2, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": "same"},
            ("conv1d",),
            "stride 1",
        ),
        (
            {"type": "embedding", "num_embeddings": 4, "embedding_dim": 2, "padding_idx": 4},
            ("embedding",),
            "padding_idx",
        ),
        ({"type": "dropout", "p": 1.5}, ("dropout", "p"), "less than or equal"),
        ({"type": "transformer"}, (), "does not match any of the expected tags"),
        ({"type": "linear", "name": "a.b", "in_features": 1, "out_features": 1}, ("linear", "name"), "pattern"),
        ({"type": "relu", "name": "to"}, ("relu",), "attribute of torch.nn.Module"),
        # Strict numbers (schemathesis found `true` taken as 1): no booleans, no numeric strings.
        ({"type": "linear", "in_features": True, "out_features": 3}, ("linear", "in_features"), "valid integer"),
        ({"type": "linear", "in_features": "2", "out_features": 3}, ("linear", "in_features"), "valid integer"),
        (
            {"type": "conv1d", "in_channels": 2, "out_channels": 4, "kernel_size": 3, "padding": False},
            ("conv1d", "padding"),
            "valid integer",
        ),
        ({"type": "dropout", "p": True}, ("dropout", "p"), "valid number"),
    ],
)
def test_bad_modules_name_the_field(module: dict[str, Any], loc_tail: tuple[str, ...], fragment: str) -> None:
    error = _spec_error([module])
    assert error["loc"][: 2 + len(loc_tail)] == ("modules", 0, *loc_tail)
    assert fragment in error["msg"]


def test_duplicate_sibling_names_are_refused() -> None:
    linear = {"type": "linear", "name": "fc", "in_features": 1, "out_features": 1}
    assert "duplicate module name 'fc'" in _spec_error([linear, linear])["msg"]


@pytest.mark.parametrize("branch", ["body", "shortcut"])
def test_duplicate_names_in_a_residual_branch_are_refused(branch: str) -> None:
    # Issue 16 (found by the header-size fuzz): a residual body of two layer norms both named A
    # planned 2 tensors instead of 4, the second silently replacing the first.
    norm = {"type": "layer_norm", "name": "A", "normalized_shape": 1}
    residual = {"type": "residual", "body": [{"type": "relu"}], "shortcut": None, branch: [norm, norm]}
    assert "duplicate module name 'A'" in _spec_error([residual])["msg"]


def test_nested_error_path_reaches_into_sequentials() -> None:
    inner = {
        "type": "sequential",
        "modules": [{"type": "relu"}, {"type": "linear", "in_features": 0, "out_features": 1}],
    }
    assert _spec_error([inner])["loc"] == ("modules", 0, "sequential", "modules", 1, "linear", "in_features")


@pytest.mark.parametrize(
    ("init", "fragment"),
    [
        ({"scheme": "uniform", "a": 1, "b": 0}, "a must be less than b"),
        ({"scheme": "truncated_normal", "a": 50, "b": 60}, "37 std"),
        ({"scheme": "normal", "std": -1}, "greater than or equal"),
        ({"scheme": "kaiming_normal", "nonlinearity": "gelu"}, "Input should be"),
        ({"scheme": "kaiming_normal", "mode": "fan_avg"}, "Input should be"),
        ({"scheme": "constant", "value": float("nan")}, "finite"),
        ({"scheme": "nope"}, "does not match any of the expected tags"),
    ],
)
def test_bad_scheme_params(mlp_request: dict[str, Any], init: dict[str, Any], fragment: str) -> None:
    mlp_request["policy"]["rules"][0]["init"] = init
    with pytest.raises(ValidationError) as info:
        InitRequest.model_validate(mlp_request)
    error = info.value.errors()[0]
    assert error["loc"][:4] == ("policy", "rules", 0, "init")
    assert fragment in error["msg"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("dtype", "int8"), ("seed", -1), ("seed", 2**63), ("seed", True), ("seed", "7"), ("policy", {"rules": []})],
)
def test_bad_request_fields(mlp_request: dict[str, Any], field: str, value: Any) -> None:
    mlp_request[field] = value
    with pytest.raises(ValidationError) as info:
        InitRequest.model_validate(mlp_request)
    assert info.value.errors()[0]["loc"][0] == field


def test_every_scheme_model_has_defaults_or_required_fields_documented() -> None:
    for name, model in SCHEME_MODELS.items():
        assert model.__doc__, f"{name} has no docstring"
        assert model.model_json_schema()["properties"]["scheme"]["const"] == name
