"""Fused projections in a manifest: each declared block gets its own fans and rule (pytorch/pytorch#166378)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.schemas.plan import Plan, PlannedTensor
from initium.service.plan.planner import make_plan

E = 256
QKV = ["query", "key", "value"]
# GPT-2's c_attn: HF's Conv1D stores [in, out], so the q, k and v outputs are blocks of axis 1.
C_ATTN = {"name": "h.0.attn.c_attn.weight", "shape": [E, 3 * E], "module_type": "linear", "fan_in": E,
          "fan_out": 3 * E, "parts": {"axis": 1, "sizes": [E, E, E], "roles": QKV}}  # fmt: skip
C_ATTN_BIAS = {"name": "h.0.attn.c_attn.bias", "shape": [3 * E], "module_type": "linear", "role": "bias", "fan_in": E,
               "fan_out": 3 * E, "parts": {"axis": 0, "sizes": [E, E, E], "roles": QKV}}  # fmt: skip
XAVIER = [{"match": {"role": "weight"}, "init": {"scheme": "xavier_uniform"}}, {"match": {"role": "bias"},
          "init": {"scheme": "zeros"}}]  # fmt: skip


def _plan(tensors: list[dict[str, Any]], rules: list[dict[str, Any]], **policy: Any) -> Plan:
    body = {"spec": {"name": "m", "tensors": tensors}, "policy": {"rules": rules, **policy}}
    return make_plan(InitRequest.model_validate(body))


def _tensor(plan: Plan, name: str) -> PlannedTensor:
    return next(t for t in plan.tensors if t.name == name)


def _bound(t: PlannedTensor | Any) -> float:
    assert t.distribution is not None and t.distribution.family == "uniform"
    return float(t.distribution.params["high"])


def test_each_block_of_a_fused_qkv_gets_xavier_from_its_own_fans() -> None:
    planned = _tensor(_plan([C_ATTN], XAVIER), "h.0.attn.c_attn.weight")
    assert planned.parts is not None
    assert [(p.axis, p.rows, p.roles[-1]) for p in planned.parts] == [
        (1, (0, 256), "query"), (1, (256, 512), "key"), (1, (512, 768), "value"),
    ]  # fmt: skip
    assert {(p.fan_in, p.fan_out) for p in planned.parts} == {(E, E)}
    # Each block is an E x E projection: sqrt(6 / (E + E)) = 0.10825, not the whole tensor's 0.0765.
    assert [_bound(p) for p in planned.parts] == pytest.approx([math.sqrt(6 / (2 * E))] * 3)
    assert planned.expected_std == pytest.approx(math.sqrt(6 / (2 * E)) / math.sqrt(3))
    whole = _tensor(_plan([{k: v for k, v in C_ATTN.items() if k != "parts"}], XAVIER), "h.0.attn.c_attn.weight")
    assert _bound(whole) == pytest.approx(math.sqrt(6 / (4 * E))) == pytest.approx(0.0765, abs=1e-4)


def test_torch_convention_keeps_the_whole_tensors_fans_per_block() -> None:
    planned = _tensor(_plan([C_ATTN], XAVIER, fan_convention="torch"), "h.0.attn.c_attn.weight")
    assert planned.parts is not None
    assert [_bound(p) for p in planned.parts] == pytest.approx([math.sqrt(6 / (4 * E))] * 3)


def test_a_rule_can_target_the_query_block_alone() -> None:
    rules = [*XAVIER, {"match": {"role": "query"}, "init": {"scheme": "zeros"}}]
    plan = _plan([C_ATTN, C_ATTN_BIAS], rules)
    for name, others in (("h.0.attn.c_attn.weight", "policy.rules[0]"), ("h.0.attn.c_attn.bias", "policy.rules[1]")):
        planned = _tensor(plan, name)
        assert planned.parts is not None and planned.rule is None
        assert [p.rule for p in planned.parts] == ["policy.rules[2]", others, others]
        assert planned.parts[0].distribution is not None and planned.parts[0].distribution.family == "constant"


def test_uncovered_blocks_are_named_by_their_axis() -> None:
    plan = _plan([C_ATTN], [{"match": {"role": "query"}, "init": {"scheme": "zeros"}}])
    assert any("h.0.attn.c_attn.weight[:, 256:512]" in w and "[:, 512:768]" in w for w in plan.warnings)


def test_a_linear_fused_bias_takes_its_weights_block_fans() -> None:
    """Phi-3's qkv_proj is an nn.Linear [q + 2 kv, E]: blocks of axis 0; a bias without fans of its
    own takes each block's fans from the weight, as a tree spec's in_proj_bias does."""
    q, kv = 64, 32
    parts = {"axis": 0, "sizes": [q, kv, kv], "roles": QKV}
    weight = {"name": "attn.qkv_proj.weight", "shape": [q + 2 * kv, 64], "module_type": "linear", "parts": parts}
    bias = {"name": "attn.qkv_proj.bias", "shape": [q + 2 * kv], "module_type": "linear", "role": "bias",
            "parts": parts}  # fmt: skip
    rules = [{"init": {"scheme": "xavier_uniform"}, "match": {"role": "weight"}}, {"match": {"role": "bias"},
             "init": {"scheme": "uniform", "a": -1.0, "b": 1.0}}]  # fmt: skip
    plan = _plan([weight, bias], rules)
    for name in ("attn.qkv_proj.weight", "attn.qkv_proj.bias"):
        planned = _tensor(plan, name)
        assert planned.parts is not None
        assert [(p.axis, p.rows, p.fan_in, p.fan_out) for p in planned.parts] == [
            (0, (0, 64), 64, 64), (0, (64, 96), 64, 32), (0, (96, 128), 64, 32),
        ]  # fmt: skip
    w = _tensor(plan, "attn.qkv_proj.weight").parts
    assert w is not None and _bound(w[1]) == pytest.approx(math.sqrt(6 / (64 + 32)))


def test_a_manifest_without_parts_plans_as_before() -> None:
    plain = {k: v for k, v in C_ATTN.items() if k != "parts"}
    planned = _tensor(_plan([plain], XAVIER), "h.0.attn.c_attn.weight")
    assert planned.parts is None and planned.rule == "policy.rules[0]"
