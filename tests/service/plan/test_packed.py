"""Packed tensors: rules per gate or per q/k/v block, fans per block, and torch_default for them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from scipy import stats

from initium.schemas import InitRequest
from initium.service.materialize.sampling import Stream, sample
from initium.service.materialize.tensor import materialize
from initium.service.plan.distributions import planned_distribution
from initium.service.plan.planner import make_plan

LSTM = {"type": "lstm", "name": "rnn", "input_size": 6, "hidden_size": 8}
MHA = {"type": "multihead_attention", "name": "attn", "embed_dim": 64, "num_heads": 4}


def _plan(modules: list[dict[str, Any]], rules: list[dict[str, Any]], **policy: Any) -> Any:
    body = {"spec": {"name": "t", "modules": modules}, "policy": {"rules": rules, **policy}}
    return make_plan(InitRequest.model_validate(body))


def test_a_rule_can_target_the_lstm_forget_gate_bias() -> None:
    rules = [
        {"init": {"scheme": "zeros"}},
        {"match": {"type": "lstm", "role": "forget", "name": "*.bias_*"}, "init": {"scheme": "ones"}},
    ]
    plan = _plan([LSTM], rules)
    bias = next(t for t in plan.tensors if t.name == "rnn.bias_ih_l0")
    assert bias.parts is not None and [p.rows for p in bias.parts] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert [p.rule for p in bias.parts] == ["policy.rules[0]", "policy.rules[1]", "policy.rules[0]", "policy.rules[0]"]
    assert bias.rule is None and bias.expected_mean == pytest.approx(0.25)
    values = materialize(bias, 7, torch.device("cpu"))
    assert torch.equal(values, torch.tensor([0.0] * 8 + [1.0] * 8 + [0.0] * 16))
    weight = next(t for t in plan.tensors if t.name == "rnn.weight_hh_l0")
    assert weight.rule == "policy.rules[0]" and "recurrent" in weight.roles


def test_packed_qkv_gets_per_block_fans_unless_torch_convention() -> None:
    rules = [{"init": {"scheme": "zeros"}}, {"match": {"role": "weight"}, "init": {"scheme": "xavier_uniform"}}]
    ours = next(t for t in _plan([MHA], rules).tensors if t.name == "attn.in_proj_weight")
    theirs = next(t for t in _plan([MHA], rules, fan_convention="torch").tensors if t.name == "attn.in_proj_weight")
    assert ours.parts is not None and theirs.parts is not None
    assert [p.roles[-1] for p in ours.parts] == ["query", "key", "value"]
    # pytorch/pytorch#166378: torch's fans (64, 192) give half the variance of each 64 x 64 block's.
    assert ours.parts[0].expected_std == pytest.approx(math.sqrt(1 / 64))
    assert theirs.parts[0].expected_std == pytest.approx(math.sqrt(2 / (64 + 192)))
    assert ours.expected_std == pytest.approx(math.sqrt(1 / 64))


def test_parts_are_independent_and_slices_cross_them() -> None:
    rules = [{"init": {"scheme": "normal"}}]
    weight = next(t for t in _plan([MHA], rules).tensors if t.name == "attn.in_proj_weight")
    whole = materialize(weight, 3, torch.device("cpu"))
    q, k = whole[:64].ravel().numpy(), whole[64:128].ravel().numpy()
    assert abs(stats.pearsonr(q, k).statistic) < 0.02
    part = weight.model_copy(update={"slice": [(60, 70), (5, 9)]})
    assert torch.equal(materialize(part, 3, torch.device("cpu")), whole[60:70, 5:9])


@pytest.mark.parametrize(
    ("spec", "module"),
    [
        (LSTM, lambda: torch.nn.LSTM(6, 8)),
        ({"type": "gru", "name": "rnn", "input_size": 6, "hidden_size": 8}, lambda: torch.nn.GRU(6, 8)),
        (MHA, lambda: torch.nn.MultiheadAttention(64, 4)),
        (
            {"type": "conv_transpose2d", "name": "up", "in_channels": 8, "out_channels": 4, "kernel_size": 3},
            lambda: torch.nn.ConvTranspose2d(8, 4, 3),
        ),
    ],
)
def test_torch_default_draws_what_fresh_torch_modules_draw(spec: dict[str, Any], module: Any) -> None:
    """Two-sample KS per tensor: our torch_default against 20 freshly constructed torch modules."""
    plan = _plan([spec], [{"init": {"scheme": "torch_default"}}])
    fresh = [module().state_dict() for _ in range(20)]
    for t in plan.tensors:
        local = t.name.split(".", 1)[1]
        theirs = torch.cat([sd[local].double().ravel() for sd in fresh]).numpy()
        ours = torch.cat([materialize(t, seed, torch.device("cpu")).double().ravel() for seed in range(20)]).numpy()
        if theirs.std() == 0:
            assert (ours == theirs[0]).all(), t.name
        else:
            assert stats.ks_2samp(ours, theirs).pvalue > 1e-4, t.name


def test_identity_plus_noise_fills_each_gate_block() -> None:
    rules = [{"init": {"scheme": "zeros"}}, {"match": {"role": "recurrent", "name": "*weight*"},
             "init": {"scheme": "identity_plus_noise", "std": 0.0}}]  # fmt: skip
    gru = {"type": "gru", "name": "rnn", "input_size": 4, "hidden_size": 4}
    hh = next(t for t in _plan([gru], rules).tensors if t.name == "rnn.weight_hh_l0")
    assert torch.equal(materialize(hh, 0, torch.device("cpu")).float(), torch.eye(4).repeat(3, 1))


def test_uncovered_parts_are_named_with_their_rows() -> None:
    plan = _plan([LSTM], [{"match": {"role": "weight"}, "init": {"scheme": "zeros"}}])
    assert "rnn.bias_ih_l0[8:16]" in plan.uncovered and "rnn.weight_ih_l0" not in plan.uncovered


def test_planned_part_distribution_round_trips() -> None:
    rules = [{"init": {"scheme": "zeros"}}, {"match": {"role": "weight"}, "init": {"scheme": "orthogonal"}}]
    weight = next(t for t in _plan([MHA], rules).tensors if t.name == "attn.in_proj_weight")
    assert weight.parts is not None
    dist = planned_distribution(weight.parts[1])
    q = sample(dist, (64, 64), Stream((1, 2), torch.device("cpu")))
    assert torch.allclose(q @ q.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
