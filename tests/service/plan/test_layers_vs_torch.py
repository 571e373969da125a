"""Every layer type plans exactly the names, shapes and fans of the equivalent torch module.

Parametrized over the layer registry: a new layer type without examples here fails the first test.
"""

from __future__ import annotations

import random
from typing import Any, get_args

import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.policy import ParameterizedType
from initium.service.errors import RequestInvalidError
from initium.service.model.modules import build
from initium.service.plan.composite import list_composites
from initium.service.plan.fans import torch_fans
from initium.service.plan.layers import list_layers
from initium.service.plan.planner import make_plan

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "linear": [{"in_features": 7, "out_features": 5}, {"in_features": 3, "out_features": 2, "bias": False}],
    "conv1d": [{"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}],
    "conv2d": [
        {"in_channels": 3, "out_channels": 8, "kernel_size": [3, 5], "stride": 2, "padding": 1},
        {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "groups": 8, "bias": False, "padding": "same"},
    ],
    "conv3d": [{"in_channels": 2, "out_channels": 4, "kernel_size": [1, 2, 3], "dilation": 2}],
    "embedding": [
        {"num_embeddings": 11, "embedding_dim": 4},
        {"num_embeddings": 5, "embedding_dim": 3, "padding_idx": -1},
    ],
    "layer_norm": [
        {"normalized_shape": 6},
        {"normalized_shape": [2, 3], "bias": False},
        {"normalized_shape": 4, "elementwise_affine": False},
    ],
    "batch_norm1d": [{"num_features": 5}, {"num_features": 5, "affine": False}],
    "batch_norm2d": [{"num_features": 3, "track_running_stats": False}],
    "batch_norm3d": [{"num_features": 2}],
    "relu": [{}],
    "leaky_relu": [{"negative_slope": 0.2}],
    "tanh": [{}],
    "sigmoid": [{}],
    "gelu": [{"approximate": "tanh"}],
    "selu": [{}],
    "silu": [{}],
    "identity": [{}],
    "dropout": [{"p": 0.1}],
    "flatten": [{}],
    "lecun_tanh": [{}],
    "max_pool1d": [{"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}],
    "max_pool2d": [{"kernel_size": [2, 3], "dilation": 2}],
    "max_pool3d": [{"kernel_size": 2}],
    "avg_pool1d": [{"kernel_size": 4, "count_include_pad": False}],
    "avg_pool2d": [{"kernel_size": 3, "stride": 1, "padding": 1, "divisor_override": 9}],
    "avg_pool3d": [{"kernel_size": [1, 2, 2]}],
    "adaptive_avg_pool1d": [{"output_size": 4}],
    "adaptive_avg_pool2d": [{"output_size": 1}, {"output_size": [None, 3]}],
    "adaptive_avg_pool3d": [{"output_size": [2, 2, 2]}],
    "conv_transpose1d": [{"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}],
    "conv_transpose2d": [
        {"in_channels": 3, "out_channels": 5, "kernel_size": [2, 3], "stride": 2, "output_padding": 1}
    ],
    "conv_transpose3d": [{"in_channels": 2, "out_channels": 2, "kernel_size": 2, "bias": False}],
    "rnn": [{"input_size": 3, "hidden_size": 5, "num_layers": 2, "nonlinearity": "relu"}],
    "lstm": [
        {"input_size": 3, "hidden_size": 4, "num_layers": 2, "bidirectional": True, "proj_size": 2},
        {"input_size": 3, "hidden_size": 4, "bias": False},
    ],
    "gru": [{"input_size": 6, "hidden_size": 3, "bidirectional": True}],
    "multihead_attention": [
        {"embed_dim": 8, "num_heads": 2, "add_bias_kv": True},
        {"embed_dim": 8, "num_heads": 4, "kdim": 3, "vdim": 5, "bias": False},
    ],
    "rms_norm": [{"normalized_shape": [2, 3]}, {"normalized_shape": 4, "elementwise_affine": False}],
    "group_norm": [{"num_groups": 2, "num_channels": 6}],
    "instance_norm1d": [{"num_features": 3}, {"num_features": 3, "affine": True}],
    "instance_norm2d": [{"num_features": 3, "affine": True, "track_running_stats": True}],
    "instance_norm3d": [{"num_features": 2, "affine": True}],
    "parameter": [{"name": "cls_token", "shape": [1, 1, 8]}],
    "transformer_block": [
        {"d_model": 16, "n_heads": 4},
        {"d_model": 16, "n_heads": 4, "n_kv_heads": 2, "gated_mlp": True, "activation": "silu", "norm": "rms_norm",
         "bias": False, "mlp_hidden": 40},
        {"d_model": 8, "n_heads": 2, "norm_first": False, "mlp_ratio": 2},
    ],
    "resnet_basic": [{"in_channels": 8, "channels": 8}, {"in_channels": 8, "channels": 16, "stride": 2}],
    "resnet_bottleneck": [{"in_channels": 16, "channels": 8, "stride": 2, "groups": 2, "base_width": 32}],
}  # fmt: skip
CATCH_ALL = {"rules": [{"init": {"scheme": "normal"}}]}


def _request(modules: list[dict[str, Any]], fan_convention: str = "initium") -> InitRequest:
    policy = {**CATCH_ALL, "fan_convention": fan_convention}
    return InitRequest.model_validate({"spec": {"name": "t", "modules": modules}, "policy": policy})


def test_every_registered_layer_has_examples() -> None:
    assert sorted(EXAMPLES) == sorted([*list_layers(), *list_composites()])


@pytest.mark.parametrize("layer_type", [*list_layers(), *list_composites()])
def test_names_and_shapes_match_torch_state_dict(layer_type: str) -> None:
    modules = [{"type": layer_type, **example} for example in EXAMPLES[layer_type]]
    request = _request(modules)
    planned = {t.name: tuple(t.shape) for t in make_plan(request).tensors}
    expected = {k: tuple(v.shape) for k, v in build(request.spec).state_dict().items()}
    assert list(planned) == list(expected)
    assert planned == expected


HEAD = {"type": "linear", "in_features": 4, "out_features": 2}


def test_containers_name_like_torch() -> None:
    block = {"type": "residual", "body": [{"type": "linear", "in_features": 4, "out_features": 4}, {"type": "relu"},
             {"type": "linear", "in_features": 4, "out_features": 4}],
             "shortcut": [{"type": "linear", "in_features": 4, "out_features": 4, "bias": False}]}  # fmt: skip
    request = _request([
        {"type": "parameter", "name": "pos_embed", "shape": [1, 4]},
        {"type": "repeat", "name": "blocks", "count": 3, "block": block},
        {"type": "repeat", "name": "heads", "count": 2, "block": HEAD},
    ])  # fmt: skip
    plan = make_plan(request)
    planned = {t.name: tuple(t.shape) for t in plan.tensors}
    assert planned == {k: tuple(v.shape) for k, v in build(request.spec).state_dict().items()}
    assert "blocks.2.body.2.weight" in planned and "blocks.0.shortcut.0.weight" in planned
    context = {t.name: (t.residual, t.depth) for t in plan.tensors}
    assert context["blocks.1.body.0.weight"] == ("blocks.1", 1)
    assert context["blocks.1.shortcut.0.weight"] == (None, 1)
    assert context["heads.1.weight"] == (None, 1) and context["pos_embed"] == (None, None)


def test_rule_match_types_are_exactly_the_layers_with_parameters() -> None:
    with_params = {
        # Composite blocks are not rule targets: their leaves carry their own types.
        layer for layer, examples in EXAMPLES.items() if layer in list_layers()
        if any(
            t.role in ("weight", "bias")
            for example in examples
            for t in make_plan(_request([{"type": layer, **example}])).tensors
        )
    }  # fmt: skip
    assert set(get_args(ParameterizedType)) == with_params


def test_nested_sequentials_are_named_like_torch() -> None:
    block = {
        "type": "sequential",
        "name": "block",
        "modules": [
            {"type": "linear", "in_features": 4, "out_features": 4},
            {"type": "sequential", "modules": [{"type": "batch_norm1d", "num_features": 4}, {"type": "relu"}]},
        ],
    }
    request = _request([{"type": "linear", "name": "stem", "in_features": 2, "out_features": 4}, block])
    names = [t.name for t in make_plan(request).tensors]
    assert names == list(build(request.spec).state_dict())
    assert "block.1.0.running_var" in names


def test_planned_dtypes_match_torch_buffers() -> None:
    request = _request([{"type": "batch_norm2d", "num_features": 3}])
    dtypes = {t.name: t.dtype for t in make_plan(request).tensors}
    assert dtypes["0.num_batches_tracked"] == "int64"
    assert dtypes["0.running_mean"] == "float32"


@pytest.mark.parametrize("layer_type", ["linear", "conv1d", "conv2d", "conv3d", "embedding"])
def test_torch_fan_convention_matches_torch(layer_type: str) -> None:
    request = _request([{"type": layer_type, **example} for example in EXAMPLES[layer_type]], "torch")
    module = build(request.spec)
    weights = {k: v for k, v in module.state_dict().items() if k.endswith("weight")}
    for t in make_plan(request).tensors:
        if t.name in weights:
            expected = torch.nn.init._calculate_fan_in_and_fan_out(weights[t.name])
            assert (t.fan_in, t.fan_out) == expected, t.name


def test_initium_fans_count_grouped_fan_out_per_group() -> None:
    """pytorch/pytorch#23854: a depthwise Conv2d(C, C, k, groups=C) has fan_in k*k, and fan_out k*k too
    (each output channel reads one input channel); torch says fan_out C*k*k."""
    depthwise = {"type": "conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "groups": 8}
    ours = make_plan(_request([depthwise])).tensors[0]
    theirs = make_plan(_request([depthwise], "torch")).tensors[0]
    assert (ours.fan_in, ours.fan_out) == (9, 9)
    assert (theirs.fan_in, theirs.fan_out) == (9, 72)
    grouped = {"type": "conv1d", "in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}
    assert (make_plan(_request([grouped])).tensors[0].fan_out) == 9


def test_rules_can_name_fan_axes() -> None:
    """A weight stored as [in, out] (HF GPT-2's Conv1D layout) gets its fans by naming the axes."""
    body = {
        "spec": {"name": "t", "modules": [{"type": "linear", "in_features": 20, "out_features": 30}]},
        "policy": {"rules": [{"init": {"scheme": "zeros"}}, {"match": {"role": "weight"},
                   "init": {"scheme": "xavier_normal"}, "fan_axes": {"in_axes": [0], "out_axes": [-1]}}]},
    }  # fmt: skip
    weight = make_plan(InitRequest.model_validate(body)).tensors[0]
    assert (weight.fan_in, weight.fan_out) == (30, 20)
    # On a conv kernel [4, 2, 3, 5] the unnamed dimensions (here 2 and 3) form the receptive field.
    conv = {"type": "conv2d", "in_channels": 2, "out_channels": 4, "kernel_size": [3, 5]}
    body["spec"]["modules"] = [conv]  # type: ignore[index]
    weight = make_plan(InitRequest.model_validate(body)).tensors[0]
    assert (weight.fan_in, weight.fan_out) == (4 * 2 * 3, 5 * 2 * 3)


def test_bad_fan_axes_name_the_rule() -> None:
    body = {
        "spec": {"name": "t", "modules": [{"type": "linear", "in_features": 2, "out_features": 3}]},
        "policy": {"rules": [{"init": {"scheme": "zeros"}, "fan_axes": {"in_axes": [2], "out_axes": [0]}}]},
    }
    with pytest.raises(RequestInvalidError, match="do not all exist") as info:
        make_plan(InitRequest.model_validate(body))
    assert info.value.loc == ["policy", "rules", 0, "fan_axes"]


def test_torch_fans_on_random_shapes() -> None:
    rng = random.Random(123)
    for _ in range(200):
        shape = tuple(rng.randint(1, 6) for _ in range(rng.randint(2, 5)))
        assert torch_fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape, device="meta"))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        torch_fans((3,))


def test_composite_blocks_mark_their_residual_outputs() -> None:
    gpt = {
        "type": "repeat",
        "name": "h",
        "count": 2,
        "block": {"type": "transformer_block", "d_model": 8, "n_heads": 2},
    }
    resnet = {"type": "resnet_bottleneck", "name": "layer1", "in_channels": 8, "channels": 4, "stride": 2}
    plan = make_plan(_request([gpt, resnet]))
    tagged = {t.name: (t.residual, t.depth) for t in plan.tensors if "residual_output" in t.roles}
    assert tagged == {
        "h.0.attn.o_proj.weight": ("h.0.attn", 0), "h.0.attn.o_proj.bias": ("h.0.attn", 0),
        "h.0.mlp.fc2.weight": ("h.0.mlp", 0), "h.0.mlp.fc2.bias": ("h.0.mlp", 0),
        "h.1.attn.o_proj.weight": ("h.1.attn", 1), "h.1.attn.o_proj.bias": ("h.1.attn", 1),
        "h.1.mlp.fc2.weight": ("h.1.mlp", 1), "h.1.mlp.fc2.bias": ("h.1.mlp", 1),
        "layer1.conv3.weight": ("layer1.body", None),
    }  # fmt: skip
    roles = {t.name: t.roles for t in plan.tensors}
    assert "residual_norm" in roles["layer1.bn3.weight"] and "query" in roles["h.1.attn.q_proj.weight"]
    assert next(t for t in plan.tensors if t.name == "layer1.downsample.0.weight").residual is None
