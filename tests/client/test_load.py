"""Loading into a module hands it back usable as it was: the same ties, no meta tensor, buffers as its
framework computes them (issue 13, items 1 and 2)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client
from initium.client._load import alias_groups

transformers = pytest.importorskip("transformers")

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
TIED: dict[str, Callable[[], torch.nn.Module]] = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=120, n_positions=64, bos_token_id=0, eos_token_id=0)),
    # T5 ties three names: shared, encoder.embed_tokens and decoder.embed_tokens (and lm_head).
    "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=120)),
    "opt": lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=120,
        max_position_embeddings=64, word_embed_proj_dim=64)),
}  # fmt: skip
BUFFERED: dict[str, Callable[[], torch.nn.Module]] = {
    "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, num_key_value_heads=2, vocab_size=120, max_position_embeddings=64)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        **SMALL, num_key_value_heads=2, vocab_size=120, max_position_embeddings=64)),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **SMALL, num_key_value_heads=2, vocab_size=120, max_position_embeddings=64)),
    "bert": lambda: transformers.BertModel(transformers.BertConfig(
        **SMALL, vocab_size=120, max_position_embeddings=64, type_vocab_size=2)),
}  # fmt: skip


@pytest.fixture
def client(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


def _on_meta(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.device("meta"):
        return build()


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", sorted(TIED))
def test_a_meta_model_keeps_its_ties(client: Client, family: str) -> None:
    built_on_cpu, model = TIED[family](), _on_meta(TIED[family])
    groups = alias_groups(model)
    assert groups == alias_groups(built_on_cpu) and groups
    client.initialize_module(model, policy="bert", seed=2)
    assert alias_groups(model) == groups
    for first, *others in groups:
        assert all(model.get_parameter(name) is model.get_parameter(first) for name in others)
    assert len(list(model.parameters())) == len(list(built_on_cpu.parameters()))
    assert _count(model) == _count(built_on_cpu)


def test_gpt2_stays_tied_through_an_optimizer_step(client: Client) -> None:
    model = _on_meta(TIED["gpt2"])
    client.initialize_module(model, policy="gpt2", seed=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.arange(8)[None], labels=torch.arange(8)[None]).loss.backward()
    optimizer.step()
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("family", sorted(BUFFERED))
def test_buffers_are_what_the_framework_computes(client: Client, family: str) -> None:
    built_on_cpu, model = BUFFERED[family](), _on_meta(BUFFERED[family])
    assert any(b.is_meta for b in model.buffers())
    client.initialize_module(model, policy="bert", seed=2)
    assert not [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    expected = dict(built_on_cpu.named_buffers())
    assert set(dict(model.named_buffers())) == set(expected)
    for name, buffer in model.named_buffers():
        assert buffer.dtype == expected[name].dtype and torch.equal(buffer, expected[name]), name
    with torch.no_grad():
        out = model(torch.arange(8)[None])
    hidden = out.logits if hasattr(out, "logits") else out.last_hidden_state
    assert torch.isfinite(hidden).all()


class _Scaled(torch.nn.Module):
    """A module whose non-persistent buffer no framework code recomputes."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.register_buffer("scale", torch.full((4,), 0.5), persistent=False)
        self.register_buffer("table", torch.arange(4.0))


def test_a_buffer_nothing_can_compute_is_named_not_left_on_meta(client: Client) -> None:
    model = _on_meta(_Scaled)
    submitted = []
    client.initialize = lambda *a, **k: submitted.append(k)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="scale, table are buffers on the meta device"):
        client.initialize_module(model, policy="torch-default", seed=2)
    assert submitted == []  # refused before the service generates anything


def test_a_real_module_keeps_its_buffers(client: Client) -> None:
    model = _Scaled()
    client.initialize_module(model, policy="torch-default", seed=2)
    assert torch.equal(model.scale, torch.full((4,), 0.5)) and torch.equal(model.table, torch.arange(4.0))


def test_a_plain_torch_tie_survives_the_meta_device(client: Client) -> None:
    """Not an embedding: two Linears sharing one weight (an autoencoder's tied encoder and decoder)."""
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16))
    model[2].weight = model[0].weight
    client.initialize_module(model, policy="kaiming-relu", seed=5)
    assert model[2].weight is model[0].weight and not model[0].weight.is_meta
    assert len(list(model.parameters())) == 3


def test_a_policy_may_be_a_preset_name(client: Client) -> None:
    """As the CLI takes it: policy="gpt2" is {"preset": "gpt2"} (it used to be a pydantic error)."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    result = client.initialize_module(model, policy="gpt2", seed=1)
    assert result.report.tensors[0].rule is not None and result.report.tensors[0].rule.startswith("preset:gpt2@")
    assert client.plan(spec={"name": "m", "modules": [{"type": "linear", "in_features": 2, "out_features": 2}]},
                       policy="xavier@1").preset == "xavier@1"  # fmt: skip


def test_buffers_are_computed_even_inside_a_meta_device_context(client: Client) -> None:
    with torch.device("meta"):
        model = BUFFERED["llama"]()
        client.initialize_module(model, policy="llama", seed=2)
    assert torch.equal(model.model.rotary_emb.inv_freq, BUFFERED["llama"]().model.rotary_emb.inv_freq)


@pytest.mark.parametrize("on_meta", [True, False], ids=["meta", "cpu"])
def test_each_tensor_keeps_the_dtype_the_module_gave_it(client: Client, on_meta: bool) -> None:
    """A bf16 model that keeps its norm in fp32 (transformers' _keep_in_fp32_modules) gets it back in fp32."""
    with torch.device("meta" if on_meta else "cpu"):
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    model[0].to(torch.bfloat16)
    model[2].to(torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    client.initialize_module(model, policy="torch-default", seed=1)
    assert {name: p.dtype for name, p in model.named_parameters()} == dtypes
    assert torch.equal(model[1].weight, torch.ones(8))
