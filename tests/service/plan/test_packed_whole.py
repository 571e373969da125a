"""Rules with packed 'whole': a packed tensor as one matrix (Keras 3's LSTM and GRU kernels)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.plan import PlannedTensor
from initium.service.materialize.tensor import materialize
from initium.service.plan.planner import make_plan

IN, H = 24, 16
LSTM = {"type": "lstm", "name": "lstm", "input_size": IN, "hidden_size": H}
GRU = {"type": "gru", "name": "gru", "input_size": IN, "hidden_size": H}


def _plan(policy: dict[str, Any], modules: list[dict[str, Any]] | None = None) -> dict[str, PlannedTensor]:
    spec = {"name": "m", "modules": modules or [LSTM, GRU]}
    return {t.name: t for t in make_plan(InitRequest.model_validate({"spec": spec, "policy": policy})).tensors}


def _draw(t: PlannedTensor) -> torch.Tensor:
    return materialize(t, 3, torch.device("cpu")).double()


@pytest.mark.parametrize(("layer", "gates"), [("lstm", 4), ("gru", 3)])
def test_keras_default_2_draws_recurrent_kernels_as_keras_3_does(layer: str, gates: int) -> None:
    tensors = _plan({"preset": "keras-default"})
    kernel, recurrent = tensors[f"{layer}.weight_ih_l0"], tensors[f"{layer}.weight_hh_l0"]
    # Keras' kernel is one (input, k units) matrix: Glorot with fan_out = k units, not one gate's units.
    bound = math.sqrt(6 / (IN + gates * H))
    assert kernel.parts is None and kernel.distribution is not None
    assert kernel.distribution.params == pytest.approx({"low": -bound, "high": bound})
    # Orthogonal over the whole (units, k units) recurrent kernel; torch stores its transpose.
    w = _draw(recurrent)
    assert recurrent.parts is None and w.shape == (gates * H, H)
    assert torch.allclose(w.T @ w, torch.eye(H, dtype=torch.float64), atol=1e-5)


def test_keras_default_2_keeps_the_forget_bias_and_1_keeps_its_gates() -> None:
    new, old = _plan({"preset": "keras-default"}), _plan({"preset": "keras-default@1"})
    for tensors in (new, old):
        bias = tensors["lstm.bias_ih_l0"]
        assert [p.expected_mean for p in bias.parts or []] == [0.0, 1.0, 0.0, 0.0]
        assert tensors["lstm.bias_hh_l0"].expected_mean == 0.0
    # @1 drew each gate as its own matrix: four orthogonal blocks, so W^T W = 4 I.
    w = _draw(old["lstm.weight_hh_l0"])
    assert torch.allclose(w.T @ w, 4 * torch.eye(H, dtype=torch.float64), atol=1e-5)
    assert [p.fan_out for p in old["lstm.weight_ih_l0"].parts or []] == [H] * 4


def test_keras_default_2_counts_grouped_conv_fans_over_all_filters() -> None:
    conv = {"type": "conv2d", "name": "c", "in_channels": 8, "out_channels": 16, "kernel_size": 3, "groups": 4}
    new, old = (
        _plan({"preset": "keras-default"}, [conv])["c.weight"],
        _plan({"preset": "keras-default@1"}, [conv])["c.weight"],
    )
    assert (new.fan_in, new.fan_out) == (2 * 9, 16 * 9)  # Keras kernel (3, 3, in / groups, filters)
    assert (old.fan_in, old.fan_out) == (2 * 9, 4 * 9)


def test_whole_rule_sharing_the_tensor_gives_its_blocks_the_whole_fans() -> None:
    """Another rule on one gate keeps the blocks apart; the whole rule's blocks still count Keras' fans."""
    rules = [
        {"match": {"type": "lstm"}, "init": {"scheme": "xavier_uniform"}, "packed": "whole"},
        {"match": {"type": "lstm", "role": "forget", "name": "*weight_ih*"}, "init": {"scheme": "zeros"}},
    ]
    kernel = _plan({"rules": rules}, [LSTM])["lstm.weight_ih_l0"]
    assert kernel.parts is not None and [p.expected_std for p in kernel.parts][1] == 0
    bound = math.sqrt(6 / (IN + 4 * H))
    assert [(p.fan_in, p.fan_out) for p in kernel.parts if p.rule == "policy.rules[0]"] == [(IN, 4 * H)] * 3
    assert kernel.parts[0].distribution is not None
    assert kernel.parts[0].distribution.params == pytest.approx({"low": -bound, "high": bound})


def test_a_module_plans_whole_like_its_tree_spec() -> None:
    from initium.client import spec_from_module

    module = torch.nn.Sequential(torch.nn.LSTM(IN, H), torch.nn.GRU(IN, H))
    manifest, _ = spec_from_module(module)
    tree = _plan({"preset": "keras-default"}, [{**LSTM, "name": None}, {**GRU, "name": None}])
    ours = {
        t.name: t
        for t in make_plan(
            InitRequest.model_validate({"spec": manifest, "policy": {"preset": "keras-default"}})
        ).tensors
    }
    assert {n: (t.parts is None, t.distribution) for n, t in ours.items()} == {
        n: (t.parts is None, t.distribution) for n, t in tree.items()
    }
