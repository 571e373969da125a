"""Every built-in preset plans a spec holding every layer type, leaving no parameter uncovered."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.schemas.policy import Rule
from initium.schemas.presets import Preset, get_preset, list_presets, register_preset
from initium.service.plan.planner import make_plan

BASIC = {"type": "resnet_basic", "in_channels": 16, "channels": 16}
ZOO: list[dict[str, Any]] = [
    {"type": "embedding", "name": "embed", "num_embeddings": 50, "embedding_dim": 32},
    {"type": "repeat", "name": "h", "count": 2, "block": {"type": "transformer_block", "d_model": 32, "n_heads": 4}},
    {"type": "transformer_block", "name": "llama", "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "gated_mlp": True,
     "norm": "rms_norm", "bias": False, "activation": "silu"},
    {"type": "multihead_attention", "name": "mha", "embed_dim": 32, "num_heads": 4},
    {"type": "lstm", "name": "lstm", "input_size": 32, "hidden_size": 16},
    {"type": "gru", "name": "gru", "input_size": 16, "hidden_size": 16},
    {"type": "rnn", "name": "rnn", "input_size": 16, "hidden_size": 16},
    {"type": "conv2d", "name": "stem", "in_channels": 3, "out_channels": 16, "kernel_size": 3},
    {"type": "batch_norm2d", "name": "bn", "num_features": 16},
    {"type": "relu"},
    {"type": "repeat", "name": "layer1", "count": 2, "block": BASIC},
    {"type": "resnet_bottleneck", "name": "layer2", "in_channels": 16, "channels": 8, "stride": 2},
    {"type": "conv_transpose2d", "name": "up", "in_channels": 32, "out_channels": 16, "kernel_size": 2},
    {"type": "group_norm", "name": "gn", "num_groups": 4, "num_channels": 16},
    {"type": "instance_norm2d", "name": "inorm", "num_features": 16, "affine": True},
    {"type": "linear", "name": "head", "in_features": 32, "out_features": 10, "roles": ["classifier"]},
]  # fmt: skip


@pytest.mark.parametrize("preset", [p.ref for p in list_presets()])
def test_every_preset_covers_every_layer_type(preset: str) -> None:
    request = InitRequest.model_validate({"spec": {"name": "zoo", "modules": ZOO}, "policy": {"preset": preset}})
    plan = make_plan(request)
    assert plan.uncovered == [], plan.uncovered
    assert all(t.expected_std is not None for t in plan.tensors)


def test_presets_are_immutable_and_resolvable_by_version() -> None:
    gpt2 = get_preset("gpt2@1")
    assert get_preset("gpt2@1") == gpt2 and gpt2.ref == "gpt2@1" and get_preset("gpt2").ref == "gpt2@2"
    with pytest.raises(ValueError, match="already registered"):
        register_preset(Preset(name="gpt2", version=1, description="x", rules=gpt2.rules))


# sha256 of every version-1 built-in's name, description and rules (dumped without defaults, as request
# ids dump them), taken from the catalog before version 2 existed: a published version never changes.
V1_SHA256 = "4a59e1bc82c67ae631f05ba590262ff9a810acc9c3610e4c67db8105ee1c9821"
ORIGINAL = ["auto", "bert", "fixup", "flax-default", "gpt2", "kaiming-relu", "keras-default", "llama", "mup",
            "resnet-kaiming", "t-fixup", "torch-default", "xavier"]  # fmt: skip
V2 = [name for name in ORIGINAL if name != "auto"]  # auto's zero_centered start is its scheme's (`choose`)
ZERO_CENTERED = {"match": {"role": "zero_centered"}, "init": {"scheme": "zeros"}}


def test_version_1_is_unchanged() -> None:
    v1 = [get_preset(f"{name}@1") for name in ORIGINAL]
    body = [[p.name, p.description, [r.model_dump(mode="json", exclude_defaults=True) for r in p.rules]] for p in v1]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert digest == V1_SHA256


@pytest.mark.parametrize("name", V2)
def test_version_2_is_version_1_then_its_fixes_and_says_why(name: str) -> None:
    v1, v2 = get_preset(f"{name}@1"), get_preset(name)
    assert v2.ref == f"{name}@2" and v2.rules[: len(v1.rules)] == v1.rules
    assert v2.rules[-1] == Rule.model_validate(ZERO_CENTERED)
    assert v2.changelog and "zero_centered" in v2.changelog and v1.changelog == ""
    assert "changelog" in v2.model_dump(mode="json")  # served by GET /v1/presets


@pytest.mark.parametrize("preset", [*V2, "t5", "vit"])
def test_newest_presets_start_zero_centered_norms_at_zero(preset: str) -> None:
    norm = {"type": "rms_norm", "name": "norm", "normalized_shape": 8, "roles": ["zero_centered"]}
    plain = {"type": "rms_norm", "name": "plain", "normalized_shape": 8}
    spec = {"name": "m", "modules": [norm, plain]}
    newest = {
        t.name: t for t in make_plan(InitRequest.model_validate({"spec": spec, "policy": {"preset": preset}})).tensors
    }
    old = make_plan(InitRequest.model_validate({"spec": spec, "policy": {"preset": f"{preset}@1"}})).tensors
    assert (newest["norm.weight"].expected_mean, newest["norm.weight"].expected_std) == (0.0, 0.0)
    assert newest["plain.weight"].expected_mean == 1.0
    if preset not in ("t5", "vit"):
        assert old[0].expected_mean == 1.0  # @1 keeps its bytes
