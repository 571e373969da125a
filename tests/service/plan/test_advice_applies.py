"""The planner's suggested fixes work: each one, applied to the request, plans (issue 18)."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from initium.schemas.request import InitRequest
from initium.service.errors import RequestInvalidError
from initium.service.plan.planner import make_plan

_LSTM = {"type": "lstm", "name": "rnn", "input_size": 8, "hidden_size": 16}
_LINEAR = {"type": "linear", "name": "fc", "in_features": 8, "out_features": 4}
_SUGGESTED = re.compile(r"narrow the rule's match to (\{.*?\}) or")


def _request(module: dict[str, Any], match: dict[str, Any], scheme: str) -> dict[str, Any]:
    return {
        "spec": {"name": "net", "modules": [module]},
        "policy": {"preset": "torch-default", "rules": [{"match": match, "init": {"scheme": scheme}}]},
    }


def _refusal(body: dict[str, Any]) -> RequestInvalidError:
    with pytest.raises(RequestInvalidError) as exc:
        make_plan(InitRequest.model_validate(body))
    return exc.value


@pytest.mark.parametrize(
    "module, match, suggested",
    [
        # The case: bias_hh has role recurrent too, and orthogonal needs a matrix.
        (_LSTM, {"type": "lstm", "role": "recurrent"}, {"type": "lstm", "role": ["recurrent", "weight"]}),
        (_LSTM, {"type": "lstm", "role": ["forget", "recurrent"]},
         {"type": "lstm", "role": ["forget", "recurrent", "weight"]}),
        (_LSTM, {"type": "lstm"}, {"type": "lstm", "role": "weight"}),
        (_LINEAR, {"name": "fc.*"}, {"name": "fc.*", "role": "weight"}),
    ],
)  # fmt: skip
def test_the_suggested_match_plans(module: dict[str, Any], match: dict[str, Any], suggested: dict[str, Any]) -> None:
    body = _request(module, match, "orthogonal")
    error = _refusal(body)
    found = _SUGGESTED.search(error.message)
    assert found is not None, error.message
    assert json.loads(found.group(1)) == suggested
    fixed = copy.deepcopy(body)
    fixed["policy"]["rules"][0]["match"] = suggested
    plan = make_plan(InitRequest.model_validate(fixed))
    # A packed tensor (the LSTM's gates) records the rule per block.
    fired = [(t.roles, t.init) for t in plan.tensors if t.rule == "policy.rules[0]"]
    fired += [(p.roles, p.init) for t in plan.tensors for p in t.parts or [] if p.rule == "policy.rules[0]"]
    assert fired and all("weight" in r and i is not None and i.scheme == "orthogonal" for r, i in fired)


def test_a_weight_the_scheme_refuses_gets_no_role_advice() -> None:
    # dirac on a linear weight: narrowing to weights cannot help, so the message does not suggest it.
    error = _refusal(_request(_LINEAR, {"type": "linear", "role": "weight"}, "dirac"))
    assert "narrow the rule's match or pick another scheme" in error.message
    assert not _SUGGESTED.search(error.message)


def test_relu_bias_advice_plans() -> None:
    body = _request(_LINEAR, {"type": "linear"}, "relu_bias")
    assert '"role": "bias"' in _refusal(body).message
    body["policy"]["rules"][0]["match"]["role"] = "bias"
    plan = make_plan(InitRequest.model_validate(body))
    assert [t.name for t in plan.tensors if t.rule == "policy.rules[0]"] == ["fc.bias"]


def test_a_single_role_keeps_its_bytes() -> None:
    # Request ids hash the request with exclude_defaults: a string role serializes as before.
    request = InitRequest.model_validate(_request(_LSTM, {"type": "lstm", "role": "recurrent"}, "orthogonal"))
    dumped = request.model_dump_json(exclude_defaults=True)
    assert '"match":{"type":"lstm","role":"recurrent"}' in dumped
