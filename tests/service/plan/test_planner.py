"""Planner semantics: context, last-match-wins rules, presets, warnings, limits, identity."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.service.errors import LimitExceededError, RequestInvalidError
from initium.service.plan.limits import Limits
from initium.service.plan.planner import make_plan


def _plan(body: dict[str, Any], limits: Limits | None = None) -> Any:
    return make_plan(InitRequest.model_validate(body), limits)


def test_design_example_plan(mlp_request: dict[str, Any]) -> None:
    plan = _plan(mlp_request)
    by_name = {t.name: t for t in plan.tensors}
    assert list(by_name) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    w = by_name["fc1.weight"]
    assert (w.shape, w.fan_in, w.fan_out, w.followed_by, w.rule) == ([512, 784], 784, 512, "relu", "policy.rules[0]")
    assert w.expected_std == pytest.approx(math.sqrt(2 / 784))
    assert by_name["fc2.weight"].followed_by is None
    assert by_name["fc1.bias"].rule == "policy.rules[1]" and by_name["fc1.bias"].expected_std == 0
    assert plan.unused_rules == [] and plan.uncovered == [] and plan.warnings == []
    assert plan.totals.parameters == 784 * 512 + 512 + 512 * 10 + 10


def test_followed_by_skips_norms_dropout_and_nesting(mlp_request: dict[str, Any]) -> None:
    mlp_request["spec"]["modules"] = [
        {"type": "linear", "name": "a", "in_features": 4, "out_features": 4},
        {"type": "sequential", "modules": [{"type": "layer_norm", "normalized_shape": 4}, {"type": "dropout"}]},
        {"type": "leaky_relu", "negative_slope": 0.2},
        {"type": "linear", "name": "b", "in_features": 4, "out_features": 4},
        {"type": "linear", "name": "c", "in_features": 4, "out_features": 4},
        {"type": "tanh"},
    ]
    mlp_request["policy"] = {"rules": [{"init": {"scheme": "zeros"}}]}
    follows = {t.module: t.followed_by for t in _plan(mlp_request).tensors}
    assert follows == {
        "a": "leaky_relu(negative_slope=0.2)",
        "1.0": "leaky_relu(negative_slope=0.2)",
        "b": None,
        "c": "tanh",
    }


def test_last_matching_rule_wins_and_unused_rules_are_listed(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"]["rules"] += [
        {"match": {"name": "fc2.*"}, "init": {"scheme": "constant", "value": 0.5}},
        {"match": {"type": "conv2d"}, "init": {"scheme": "ones"}},
    ]
    plan = _plan(mlp_request)
    rules = {t.name: t.rule for t in plan.tensors}
    assert rules == {
        "fc1.weight": "policy.rules[0]",
        "fc1.bias": "policy.rules[1]",
        "fc2.weight": "policy.rules[2]",
        "fc2.bias": "policy.rules[2]",
    }
    assert plan.unused_rules == ["policy.rules[3]"]
    assert "policy.rules[3] matched no tensor" in plan.warnings


def test_uncovered_parameters_are_warned_not_buffers(mlp_request: dict[str, Any]) -> None:
    mlp_request["spec"]["modules"].append({"type": "batch_norm1d", "num_features": 10})
    plan = _plan(mlp_request)
    assert plan.uncovered == ["3.weight"]
    buffers = {t.name: (t.rule, t.expected_mean) for t in plan.tensors if t.role.startswith(("running", "num"))}
    assert buffers == {
        "3.running_mean": (None, 0.0),
        "3.running_var": (None, 1.0),
        "3.num_batches_tracked": (None, 0.0),
    }


def test_preset_rules_come_first_and_request_rules_override(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"] = {
        "preset": "xavier@1",
        "rules": [{"match": {"name": "fc2.weight"}, "init": {"scheme": "zeros"}}],
    }
    plan = _plan(mlp_request)
    assert plan.preset == "xavier@1"
    rules = {t.name: t.rule for t in plan.tensors}
    assert rules["fc1.weight"].startswith("preset:xavier@1[")
    assert rules["fc2.weight"] == "policy.rules[0]"
    assert rules["fc1.bias"].startswith("preset:xavier@1[")


def test_unknown_preset_names_the_field(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"] = {"preset": "nope"}
    with pytest.raises(RequestInvalidError, match="known presets: auto, bert, fixup") as info:
        _plan(mlp_request)
    assert info.value.loc == ["policy", "preset"]


def test_orthogonal_on_a_bias_is_refused_with_the_rule(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"]["rules"].append({"init": {"scheme": "orthogonal"}})
    with pytest.raises(RequestInvalidError, match="2 or more dimensions") as info:
        _plan(mlp_request)
    assert info.value.loc == ["policy", "rules", 2, "init"]


def test_limits_refuse_oversized_specs(mlp_request: dict[str, Any]) -> None:
    with pytest.raises(LimitExceededError, match="at most 1,000"):
        _plan(mlp_request, Limits(max_parameters=1000))
    with pytest.raises(LimitExceededError, match="at most 3"):
        _plan(mlp_request, Limits(max_tensors=3))


def test_request_id_is_stable_and_sensitive(mlp_request: dict[str, Any]) -> None:
    first = _plan(mlp_request).request_id
    assert _plan(mlp_request).request_id == first
    mlp_request["seed"] = 8
    assert _plan(mlp_request).request_id != first


def test_request_id_pins_the_preset_version(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"] = {"preset": "xavier"}
    unpinned = _plan(mlp_request).request_id
    mlp_request["policy"] = {"preset": "xavier@2"}  # the newest version
    assert _plan(mlp_request).request_id == unpinned
    mlp_request["policy"] = {"preset": "xavier@1"}
    assert _plan(mlp_request).request_id != unpinned


def test_slices_are_recorded_and_change_totals(mlp_request: dict[str, Any]) -> None:
    mlp_request["slices"] = {"fc1.weight": [[0, 128], [0, 784]]}
    plan = _plan(mlp_request)
    weight = plan.tensors[0]
    assert weight.slice == [(0, 128), (0, 784)] and weight.shape == [512, 784] and weight.elementwise
    assert weight.output_shape() == [128, 784] and (weight.fan_in, weight.fan_out) == (784, 512)
    assert plan.totals.bytes == 4 * (128 * 784 + 512 + 5120 + 10)


@pytest.mark.parametrize(
    ("slices", "loc", "fragment"),
    [
        ({"fc9.weight": [[0, 1], [0, 1]]}, ["slices", "fc9.weight"], "not a tensor of this spec"),
        ({"fc1.weight": [[0, 1]]}, ["slices", "fc1.weight"], "one [start, stop) per dimension"),
        ({"fc1.weight": [[0, 1], [700, 800]]}, ["slices", "fc1.weight", 1], "0 <= start < stop <= 784"),
        ({"fc1.bias": [[5, 5]]}, ["slices", "fc1.bias", 0], "got [5, 5)"),
    ],
)
def test_bad_slices_name_the_tensor_and_dimension(
    mlp_request: dict[str, Any], slices: dict[str, Any], loc: list[Any], fragment: str
) -> None:
    mlp_request["slices"] = slices
    with pytest.raises(RequestInvalidError) as info:
        _plan(mlp_request)
    assert info.value.loc == loc and fragment in info.value.message


def test_constant_hidden_weights_are_warned_about(mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"]["rules"][0]["init"] = {"scheme": "constant", "value": 0.01}
    warnings = _plan(mlp_request).warnings
    assert len(warnings) == 2 and "fc1.weight starts constant, so its 512 units stay identical" in warnings[0]
    mlp_request["spec"]["modules"][2]["roles"] = ["classifier"]  # a zero readout is a choice (muP)
    assert len(_plan(mlp_request).warnings) == 1


def test_two_tensors_under_one_name_are_refused_whatever_the_container() -> None:
    # The planner's own guard behind the schema's sibling check (issue 16): a container that let two
    # modules share a name would otherwise plan one tensor where the network has two.
    norms = [{"type": "layer_norm", "name": n, "normalized_shape": 2} for n in ("A", "B")]
    body = {"name": "t", "modules": [{"type": "residual", "body": norms, "shortcut": None}]}
    request = InitRequest.model_validate({"spec": body, "policy": {"rules": [{"init": {"scheme": "normal"}}]}})
    object.__setattr__(request.spec.modules[0].body[1], "name", "A")  # type: ignore[union-attr]
    with pytest.raises(RequestInvalidError, match=re.escape("two tensors would both be named '0.body.A.weight'")):
        make_plan(request)
