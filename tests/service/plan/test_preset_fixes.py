"""Each preset fix of issue 13 item 6 at its right value under @2, with @1's old value kept."""

from __future__ import annotations

import math
from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.schemas.plan import PlannedTensor
from initium.service.errors import RequestInvalidError
from initium.service.plan.planner import make_plan

MLP = [
    {"type": "linear", "name": "fc1", "in_features": 784, "out_features": 1024},
    {"type": "relu"},
    {"type": "linear", "name": "fc2", "in_features": 1024, "out_features": 1024},
    {"type": "relu"},
    {"type": "linear", "name": "head", "in_features": 1024, "out_features": 10, "roles": ["classifier"]},
]


def _plan(modules: list[dict[str, Any]], preset: str, rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    policy = {"preset": preset, "rules": rules or []}
    plan = make_plan(InitRequest.model_validate({"spec": {"name": "m", "modules": modules}, "policy": policy}))
    return {t.name: t for t in plan.tensors}


def test_mup_keeps_a_first_layer_reading_the_data_at_the_base_std() -> None:
    """mup's constant_std_init keeps a tensor with one infinite dimension at the base std: Linear(784 -> W)."""
    new, old = _plan(MLP, "mup"), _plan(MLP, "mup@1")
    assert new["fc1.weight"].expected_std == pytest.approx(0.02)
    assert (
        old["fc1.weight"].expected_std == pytest.approx(0.02 * math.sqrt(256 / 784)) == pytest.approx(0.0114, abs=5e-5)
    )
    for tensors in (new, old):  # hidden and readout as before
        assert tensors["fc2.weight"].expected_std == pytest.approx(0.02 * math.sqrt(256 / 1024))
        assert tensors["head.weight"].expected_std == 0
    embedded = _plan([{"type": "embedding", "name": "wte", "num_embeddings": 10, "embedding_dim": 784}, *MLP], "mup")
    assert embedded["fc1.weight"].expected_std == pytest.approx(0.02 * math.sqrt(256 / 784))  # reads a width


def _attention_stack(packed: bool) -> dict[str, Any]:
    """Four pre-norm blocks of d_model 64 (L = 8 branches), as transformer_blocks or as residuals around a
    packed nn.MultiheadAttention and an MLP."""
    if not packed:
        return {"type": "repeat", "name": "h", "count": 4, "block": {"type": "transformer_block", "d_model": 64,
                                                                       "n_heads": 4}}  # fmt: skip
    attn = [
        {"type": "layer_norm", "normalized_shape": 64},
        {"type": "multihead_attention", "name": "mha", "embed_dim": 64, "num_heads": 4},
    ]
    mlp = [{"type": "layer_norm", "normalized_shape": 64}, {"type": "linear", "in_features": 64, "out_features": 256},
           {"type": "gelu"}, {"type": "linear", "in_features": 256, "out_features": 64}]  # fmt: skip
    block = {"type": "sequential", "modules": [{"type": "residual", "name": "a", "body": attn},
                                               {"type": "residual", "name": "m", "body": mlp}]}  # fmt: skip
    return {"type": "repeat", "name": "h", "count": 4, "block": block}


def test_fixup_counts_packed_attention_as_four_layers_like_transformer_block() -> None:
    he = math.sqrt(2 / 64)
    separate = _plan([_attention_stack(packed=False)], "fixup")
    assert separate["h.0.attn.q_proj.weight"].expected_std == pytest.approx(he * 8 ** (-1 / 6)) == pytest.approx(0.125)
    for preset, std in (("fixup", 0.125), ("fixup@1", 0.0625)):
        tensors = _plan([_attention_stack(packed=True)], preset)
        in_proj = tensors["h.0.a.body.mha.in_proj_weight"]
        assert [p.expected_std for p in in_proj.parts or []] == pytest.approx([std] * 3), preset
        assert tensors["h.0.a.body.mha.out_proj.weight"].expected_std == 0
        assert tensors["h.0.m.body.1.weight"].expected_std == pytest.approx(math.sqrt(2 / 256) * 8**-0.5)


def test_resnet_kaiming_classifier_bias_is_the_linear_default() -> None:
    modules = [
        {"type": "conv2d", "name": "conv1", "in_channels": 3, "out_channels": 16, "kernel_size": 3},
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "in_features": 64, "out_features": 10},
    ]
    bias = _plan(modules, "resnet-kaiming")["fc.bias"]
    assert bias.distribution is not None and bias.distribution.family == "uniform"
    assert bias.distribution.params == pytest.approx({"low": -1 / 8, "high": 1 / 8})  # U(+-1/sqrt(fan_in))
    assert _plan(modules, "resnet-kaiming@1")["fc.bias"].expected_std == 0


def _law(t: PlannedTensor) -> tuple[str, dict[str, float]]:
    assert t.distribution is not None
    return t.distribution.family, t.distribution.params


def test_t5_query_needs_its_head_width() -> None:
    layer = {"type": "linear", "name": "q", "in_features": 64, "out_features": 64, "roles": ["query"]}
    rule = {"match": {"role": "query"}, "init": {"scheme": "t5", "query": True}}
    with pytest.raises(RequestInvalidError, match="head_dim"):
        _plan([layer], "t5", [rule])
    manifest = {"name": "m", "tensors": [{"name": "q.weight", "shape": [64, 64], "module_type": "linear",
                                          "roles": ["query"], "head_dim": 16}]}  # fmt: skip
    policy = {"preset": "t5", "rules": [rule]}
    planned = make_plan(InitRequest.model_validate({"spec": manifest, "policy": policy})).tensors[0]
    assert _law(planned) == ("normal", pytest.approx({"loc": 0.0, "scale": (64 * 16) ** -0.5}))
