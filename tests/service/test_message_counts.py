"""The service's messages count in words that agree with the number (issue 18, item 3: "1 parameters"
reached users through the CLI, which passes the server's messages on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from initium.schemas import InitRequest
from initium.schemas.wording import count
from initium.service.api.http import describe_validation_error
from initium.service.errors import RequestInvalidError
from initium.service.jobs import submit as jobs
from initium.service.jobs.presets import PresetStore
from initium.service.plan.limits import Limits
from initium.service.plan.planner import make_plan

ONE_LINEAR = {"name": "one", "modules": [{"type": "linear", "name": "fc", "in_features": 8, "out_features": 4}]}
WEIGHTS_ONLY = {"rules": [{"match": {"role": "weight"}, "init": {"scheme": "zeros"}}]}


def test_count_agrees_with_the_number() -> None:
    assert [count(n, "tensor") for n in (0, 1, 2, 1024)] == ["0 tensors", "1 tensor", "2 tensors", "1,024 tensors"]


def test_one_uncovered_parameter_is_one_parameter(tmp_path: Path) -> None:
    request = InitRequest.model_validate({"spec": ONE_LINEAR, "policy": WEIGHTS_ONLY})
    assert "1 parameter matched no rule: fc.bias" in make_plan(request).warnings
    with pytest.raises(RequestInvalidError, match=r"no rule initializes 1 parameter \(fc\.bias\)"):
        jobs.plan_request(request, Limits(), PresetStore(tmp_path))


def test_one_more_error_is_one_more_error() -> None:
    errors = [
        {"type": "greater_than", "loc": ("body", "seed"), "msg": "Input should be greater than 0", "input": -1},
        {"type": "missing", "loc": ("body", "spec"), "msg": "Field required", "input": {}},
    ]
    message, _ = describe_validation_error(errors)
    assert message.endswith("(and 1 more error)")
