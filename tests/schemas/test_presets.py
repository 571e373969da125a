"""Every built-in preset plans a spec holding every layer type, leaving no parameter uncovered."""

from __future__ import annotations

from typing import Any

import pytest

from initium.schemas import InitRequest
from initium.schemas.presets import Preset, get_preset, list_presets, register_preset
from initium.service.plan import make_plan

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
    gpt2 = get_preset("gpt2")
    assert get_preset("gpt2@1") == gpt2 and gpt2.ref == "gpt2@1"
    with pytest.raises(ValueError, match="already registered"):
        register_preset(Preset(name="gpt2", version=1, description="x", rules=gpt2.rules))
