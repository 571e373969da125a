"""Structural schemes through the real planner: GPT-2 scaling, depth init, Fixup, T-Fixup, muP, auto."""

from __future__ import annotations

import math
from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.service.errors import RequestInvalidError
from initium.service.plan.planner import make_plan

GPT = {"type": "repeat", "name": "h", "count": 12, "block": {"type": "transformer_block", "d_model": 64, "n_heads": 4}}


def _plan(modules: list[dict[str, Any]], rules: list[dict[str, Any]], preset: str | None = None) -> dict[str, Any]:
    policy: dict[str, Any] = {"rules": rules} if preset is None else {"preset": preset, "rules": rules}
    plan = make_plan(InitRequest.model_validate({"spec": {"name": "t", "modules": modules}, "policy": policy}))
    return {t.name: t for t in plan.tensors}


def test_gpt2_scaling_uses_the_number_of_blocks() -> None:
    rules = [{"init": {"scheme": "zeros"}}, {"match": {"role": "residual_output", "name": "*.weight"},
             "init": {"scheme": "scaled_normal"}}]  # fmt: skip
    tensors = _plan([GPT], rules)
    assert tensors["h.7.mlp.fc2.weight"].expected_std == pytest.approx(0.02 / math.sqrt(24))
    assert tensors["h.7.attn.o_proj.weight"].expected_std == pytest.approx(0.02 / math.sqrt(24))
    assert tensors["h.7.attn.q_proj.weight"].expected_std == 0


def test_depth_init_grows_smaller_with_depth() -> None:
    rules = [
        {"init": {"scheme": "zeros"}},
        {"match": {"role": "weight", "type": "linear"}, "init": {"scheme": "depth_scaled_normal"}},
    ]
    tensors = _plan([GPT], rules)
    stds = [tensors[f"h.{i}.mlp.fc1.weight"].expected_std for i in range(12)]
    assert stds == pytest.approx([0.02 / math.sqrt(2 * (i + 1)) for i in range(12)])


def test_scaled_normal_outside_a_repeat_asks_for_n_layers() -> None:
    with pytest.raises(RequestInvalidError, match="give n_layers"):
        _plan([{"type": "linear", "in_features": 4, "out_features": 4}], [{"init": {"scheme": "scaled_normal"}}])
    tensors = _plan(
        [{"type": "linear", "in_features": 4, "out_features": 4}],
        [{"init": {"scheme": "scaled_normal", "n_layers": 2}}],
    )
    assert tensors["0.weight"].expected_std == pytest.approx(0.01)


def test_fixup_on_a_resnet() -> None:
    """CIFAR ResNet-style: L basic blocks (m = 2): conv1 He * L^-1/2, conv2 0, classifier 0."""
    blocks = {
        "type": "repeat",
        "name": "layer1",
        "count": 3,
        "block": {"type": "resnet_basic", "in_channels": 16, "channels": 16},
    }
    head = {"type": "linear", "name": "fc", "in_features": 16, "out_features": 10, "roles": ["classifier"]}
    stem = {"type": "conv2d", "name": "conv1", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "bias": False}
    tensors = _plan([stem, blocks, head], [], preset="fixup")
    he = math.sqrt(2 / (16 * 9))  # fan_out = 16 * 3 * 3
    assert tensors["layer1.0.conv1.weight"].expected_std == pytest.approx(he * 3**-0.5)
    assert tensors["layer1.2.conv2.weight"].expected_std == 0 and tensors["fc.weight"].expected_std == 0
    assert tensors["conv1.weight"].expected_std == pytest.approx(math.sqrt(2 / (16 * 9)))
    assert tensors["layer1.1.bn1.weight"].expected_mean == 1


def test_t_fixup_scales_all_but_query_and_key() -> None:
    embed = {"type": "embedding", "name": "embed", "num_embeddings": 100, "embedding_dim": 64}
    tensors = _plan([embed, GPT], [], preset="t-fixup")
    xavier = math.sqrt(6 / 128) / math.sqrt(3)
    assert tensors["h.0.attn.q_proj.weight"].expected_std == pytest.approx(xavier)
    assert tensors["h.0.attn.v_proj.weight"].expected_std == pytest.approx(xavier * 0.67 * 12**-0.25)
    assert tensors["embed.weight"].expected_std == pytest.approx(64**-0.5 * (9 * 12) ** -0.25)


def test_mup_scales_hidden_by_width_and_zeroes_the_readout() -> None:
    modules = [
        {"type": "embedding", "name": "wte", "num_embeddings": 10, "embedding_dim": 512},
        {"type": "linear", "name": "hidden", "in_features": 512, "out_features": 512},
        {"type": "linear", "name": "head", "in_features": 512, "out_features": 10, "roles": ["classifier"]},
    ]
    rules = [
        {"init": {"scheme": "zeros"}},
        {"match": {"role": "weight"}, "init": {"scheme": "mup", "base_fan_in": 128, "std": 0.05}},
    ]
    tensors = _plan(modules, rules)
    assert tensors["wte.weight"].expected_std == pytest.approx(0.05)
    assert tensors["hidden.weight"].expected_std == pytest.approx(0.05 * math.sqrt(128 / 512))
    assert tensors["head.weight"].expected_std == 0


def test_auto_records_its_reasons() -> None:
    modules = [
        {"type": "embedding", "name": "embed", "num_embeddings": 10, "embedding_dim": 8},
        {"type": "lstm", "name": "rnn", "input_size": 8, "hidden_size": 8},
        {"type": "linear", "name": "a", "in_features": 8, "out_features": 8},
        {"type": "layer_norm", "normalized_shape": 8},
        {"type": "relu"},
        {"type": "linear", "name": "b", "in_features": 8, "out_features": 8},
        {"type": "tanh"},
        {"type": "linear", "name": "out", "in_features": 8, "out_features": 2},
    ]
    tensors = _plan(modules, [], preset="auto")
    assert tensors["a.weight"].init.scheme == "kaiming_normal" and "relu" in tensors["a.weight"].reason
    assert tensors["b.weight"].init.gain == pytest.approx(5 / 3)
    assert tensors["out.weight"].init.scheme == "xavier_uniform"
    assert tensors["embed.weight"].expected_std == pytest.approx(0.02)
    assert tensors["rnn.weight_hh_l0"].init.scheme == "orthogonal"
    bias = tensors["rnn.bias_ih_l0"]
    assert [p.init.scheme for p in bias.parts] == ["zeros", "ones", "zeros", "zeros"]
    assert "forget" in bias.parts[1].reason
    assert tensors["rnn.bias_hh_l0"].parts[1].init.scheme == "zeros"
    assert tensors["3.weight"].expected_mean == 1


def test_relu_bias_only_where_relu_follows() -> None:
    modules = [{"type": "linear", "name": "a", "in_features": 4, "out_features": 4}, {"type": "relu"},
               {"type": "linear", "name": "b", "in_features": 4, "out_features": 4}]  # fmt: skip
    tensors = _plan(
        modules, [{"init": {"scheme": "xavier_uniform"}}, {"match": {"role": "bias"}, "init": {"scheme": "relu_bias"}}]
    )
    assert (tensors["a.bias"].expected_mean, tensors["b.bias"].expected_mean) == (0.1, 0.0)


def test_fixup_scalar_parameters_and_mup_zero_query() -> None:
    modules = [
        {"type": "parameter", "name": "bias1a", "shape": [1]},
        {"type": "parameter", "name": "scale", "shape": [1], "roles": ["scale"]},
        {"type": "linear", "name": "fc", "in_features": 4, "out_features": 2, "roles": ["classifier"]},
    ]
    tensors = _plan(modules, [], preset="fixup")
    assert (tensors["bias1a"].expected_mean, tensors["scale"].expected_mean) == (0.0, 1.0)
    block = {"type": "transformer_block", "name": "b", "d_model": 64, "n_heads": 4}
    tensors = _plan([block], [], preset="mup")
    assert tensors["b.attn.q_proj.weight"].expected_std == 0
    assert tensors["b.attn.k_proj.weight"].expected_std == pytest.approx(0.02 * math.sqrt(256 / 64))
