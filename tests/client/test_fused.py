"""spec_from_module on real Hugging Face models (built from small configs, nothing downloaded): fused
q/k/v and gate/up projections are declared as parts, so each block gets its own fans (pytorch/pytorch#166378)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client, spec_from_module
from initium.client._fused import fused_parts
from initium.schemas import InitRequest
from initium.schemas.spec import Manifest
from initium.service.plan.planner import make_plan

transformers = pytest.importorskip("transformers")

E = 256
QKV = ["query", "key", "value"]
XAVIER = {"rules": [{"match": {"role": "weight"}, "init": {"scheme": "xavier_uniform"}},
                    {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]}  # fmt: skip


def _gpt2(**config: Any) -> torch.nn.Module:
    config = {"n_layer": 2, "n_embd": E, "n_head": 4, "vocab_size": 120, "n_positions": 64, **config}
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(bos_token_id=0, eos_token_id=0, **config))


def _parts(spec: Manifest) -> dict[str, tuple[int, list[int], list[str]]]:
    return {t.name: (t.parts.axis, t.parts.sizes, list(t.parts.roles)) for t in spec.tensors if t.parts is not None}


def test_gpt2_c_attn_is_declared_as_q_k_v_blocks_of_its_outputs() -> None:
    spec, _ = spec_from_module(_gpt2())
    parts = _parts(spec)
    # Conv1D stores [in, out] = [E, 3E]: the q, k and v outputs are blocks of axis 1; the bias's of axis 0.
    assert parts == {
        f"transformer.h.{i}.attn.c_attn.{local}": (axis, [E, E, E], QKV)
        for i in range(2) for local, axis in (("weight", 1), ("bias", 0))
    }  # fmt: skip
    c_attn = next(t for t in spec.tensors if t.name == "transformer.h.0.attn.c_attn.weight")
    assert (c_attn.shape, c_attn.fan_in, c_attn.fan_out) == ([E, 3 * E], E, 3 * E)


def test_gpt2_cross_attention_c_attn_holds_key_and_value() -> None:
    parts = _parts(spec_from_module(_gpt2(add_cross_attention=True))[0])
    assert parts["transformer.h.0.crossattention.c_attn.weight"] == (1, [E, E], ["key", "value"])
    assert parts["transformer.h.0.attn.c_attn.weight"] == (1, [E, E, E], QKV)
    assert "transformer.h.0.crossattention.q_attn.weight" not in parts  # a plain query projection


def test_gpt2_blocks_plan_xavier_from_their_own_fans() -> None:
    spec, _ = spec_from_module(_gpt2())
    plan = make_plan(InitRequest.model_validate({"spec": spec.model_dump(mode="json"), "policy": XAVIER}))
    c_attn = next(t for t in plan.tensors if t.name == "transformer.h.1.attn.c_attn.weight")
    assert c_attn.parts is not None
    bounds = [p.distribution.params["high"] for p in c_attn.parts if p.distribution is not None]
    assert bounds == pytest.approx([math.sqrt(6 / (E + E))] * 3)  # 0.108, not the whole tensor's 0.0765


def test_initialize_module_draws_each_gpt2_block_as_its_own_matrix(app_client: TestClient) -> None:
    policy = {"rules": [*XAVIER["rules"], {"match": {"role": "query"}, "init": {"scheme": "zeros"}}]}
    model = _gpt2()
    Client(http_client=app_client).initialize_module(model, policy=policy, seed=3)
    w = model.transformer.h[0].attn.c_attn.weight.detach().double()
    bound = math.sqrt(6 / (E + E))
    assert torch.count_nonzero(w[:, :E]) == 0
    for block in (w[:, E : 2 * E], w[:, 2 * E :]):
        assert block.abs().max() <= bound and block.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(model.transformer.h[0].attn.c_attn.bias) == 0


SMALL = {"num_hidden_layers": 1, "num_attention_heads": 4, "hidden_size": 64, "vocab_size": 120}
# family -> (the model, then each fused tensor's expected parts; every other tensor has none)
FAMILIES: dict[str, tuple[Callable[[], torch.nn.Module], dict[str, tuple[int, list[int], list[str]]]]] = {
    "phi3": (lambda: transformers.Phi3ForCausalLM(transformers.Phi3Config(
        **SMALL, num_key_value_heads=2, intermediate_size=128, max_position_embeddings=64, pad_token_id=0)), {
        "model.layers.0.self_attn.qkv_proj.weight": (0, [64, 32, 32], QKV),
        "model.layers.0.mlp.gate_up_proj.weight": (0, [128, 128], ["gate", "up"])}),
    "glm": (lambda: transformers.GlmForCausalLM(transformers.GlmConfig(
        **SMALL, num_key_value_heads=2, intermediate_size=128, pad_token_id=0)), {
        "model.layers.0.mlp.gate_up_proj.weight": (0, [128, 128], ["gate", "up"])}),
    "gpt_bigcode multi-query": (lambda: transformers.GPTBigCodeForCausalLM(transformers.GPTBigCodeConfig(
        n_embd=64, n_head=4, n_layer=1, vocab_size=120, n_positions=64, multi_query=True)), {
        "transformer.h.0.attn.c_attn.weight": (0, [64, 16, 16], QKV),
        "transformer.h.0.attn.c_attn.bias": (0, [64, 16, 16], QKV)}),
    # Interleaved per head ([q_h, k_h, v_h] for each head): left whole, not split with wrong fans.
    "gpt_bigcode multi-head": (lambda: transformers.GPTBigCodeForCausalLM(transformers.GPTBigCodeConfig(
        n_embd=64, n_head=4, n_layer=1, vocab_size=120, n_positions=64, multi_query=False)), {}),
    "gpt_neox": (lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **SMALL, intermediate_size=128)), {}),
    "falcon multi-query": (lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        **SMALL, multi_query=True, new_decoder_architecture=False)), {
        "transformer.h.0.self_attention.query_key_value.weight": (0, [64, 16, 16], QKV)}),
    "falcon new architecture": (lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        **SMALL, num_kv_heads=2, new_decoder_architecture=True)), {}),
    "mpt": (lambda: transformers.MptForCausalLM(transformers.MptConfig(
        d_model=64, n_heads=4, n_layers=1, vocab_size=120, max_seq_len=64)), {
        "transformer.blocks.0.attn.Wqkv.weight": (0, [64, 64, 64], QKV)}),
    "modernbert": (lambda: transformers.ModernBertModel(transformers.ModernBertConfig(
        **SMALL, intermediate_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2)), {
        "layers.0.attn.Wqkv.weight": (0, [64, 64, 64], QKV),
        "layers.0.mlp.Wi.weight": (0, [128, 128], ["gate", "up"])}),
    "openai-gpt": (lambda: transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
        n_embd=64, n_head=4, n_layer=1, vocab_size=120, n_positions=64)), {
        "transformer.h.0.attn.c_attn.weight": (1, [64, 64, 64], QKV),
        "transformer.h.0.attn.c_attn.bias": (0, [64, 64, 64], QKV)}),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, intermediate_size=128, max_position_embeddings=64)), {}),
}  # fmt: skip


# modeling_gpt_bigcode.py scripts a helper with torch.jit.script when imported, which torch 2.13 deprecates.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fused_layers_of_each_family(family: str) -> None:
    build, expected = FAMILIES[family]
    assert _parts(spec_from_module(build())[0]) == expected


def test_phi3_blocks_plan_from_their_own_fans_and_load_strictly() -> None:
    build, _ = FAMILIES["phi3"]
    with torch.device("meta"):
        model = build()
    spec, _ = spec_from_module(model)
    plan = make_plan(InitRequest.model_validate({"spec": spec.model_dump(mode="json"), "policy": XAVIER}))
    qkv = next(t for t in plan.tensors if t.name == "model.layers.0.self_attn.qkv_proj.weight")
    assert qkv.parts is not None
    # nn.Linear [q + 2 kv, E]: q is a [64, 64] projection, k and v [32, 64] (grouped-query attention).
    assert [(p.fan_in, p.fan_out) for p in qkv.parts] == [(64, 64), (64, 32), (64, 32)]


def test_plain_modules_have_no_parts() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    assert _parts(spec_from_module(model)[0]) == {}
    assert fused_parts(model, "0", model[0], "weight", (12, 4)) is None
    assert fused_parts(model, "", model, "weight", (12, 4)) is None


def test_a_known_class_name_with_another_layout_is_left_whole() -> None:
    class Phi3Attention(torch.nn.Module):  # remote code of the same name, without head_dim
        def __init__(self) -> None:
            super().__init__()
            self.qkv_proj = torch.nn.Linear(8, 24)

    class GPT2Attention(torch.nn.Module):  # c_attn that does not split into three
        def __init__(self) -> None:
            super().__init__()
            self.c_attn = torch.nn.Linear(8, 25)

    model = torch.nn.ModuleDict({"phi": Phi3Attention(), "gpt": GPT2Attention()})
    assert _parts(spec_from_module(model)[0]) == {}
