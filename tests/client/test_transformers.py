"""Real Hugging Face models built from their configs (no weights downloaded): initialize_module loads
strictly, and every tensor follows the law the model's own init draws it from (two-sample KS)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from fastapi.testclient import TestClient
from scipy import stats

from initium.client import Client, spec_from_module

transformers = pytest.importorskip("transformers")

SMALL = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64, "intermediate_size": 128}
MODELS: dict[str, tuple[Callable[[], torch.nn.Module], str]] = {
    "gpt2": (lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=3, n_embd=64, n_head=4, vocab_size=120, n_positions=64, bos_token_id=0, eos_token_id=0)), "gpt2"),
    "llama": (lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SMALL, num_key_value_heads=2, vocab_size=120, max_position_embeddings=64)), "llama"),
    "bert": (lambda: transformers.BertModel(transformers.BertConfig(
        **SMALL, vocab_size=120, max_position_embeddings=64, type_vocab_size=2)), "bert"),
    "vit": (lambda: transformers.ViTModel(transformers.ViTConfig(**SMALL, image_size=32, patch_size=8)), "bert"),
}  # fmt: skip


@pytest.fixture
def client(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


def _own_init(build: Callable[[], torch.nn.Module], copies: int) -> dict[str, torch.Tensor]:
    """Each tensor's values pooled over several freshly built models: the model's own init."""
    torch.manual_seed(0)
    states = [build().state_dict() for _ in range(copies)]
    return {name: torch.cat([s[name].detach().double().ravel() for s in states]) for name in states[0]}


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_initialize_module_matches_the_models_own_init(client: Client, model_name: str) -> None:
    build, preset = MODELS[model_name]
    theirs = _own_init(build, copies=3)
    ours: dict[str, list[torch.Tensor]] = {}
    for seed in range(3):
        model = build()
        result = client.initialize_module(model, policy={"preset": preset}, seed=seed)
        assert set(result.tensors) <= set(model.state_dict())  # loaded strictly, tied names included
        for name, value in model.state_dict().items():
            ours.setdefault(name, []).append(value.detach().double().ravel())
    for name, reference in theirs.items():
        mine = torch.cat(ours[name])
        if reference.std() == 0 or reference.numel() < 300:
            assert torch.allclose(mine.mean(), reference.mean(), atol=0.05 + 3 * float(reference.std())), name
            continue
        assert stats.ks_2samp(mine.numpy(), reference.numpy()).pvalue > 1e-4, name


def test_gpt2_residual_projections_are_scaled(client: Client) -> None:
    model = MODELS["gpt2"][0]()
    _, aliases = spec_from_module(model)
    assert aliases == {"lm_head.weight": "transformer.wte.weight"}
    result = client.initialize_module(model, policy={"preset": "gpt2"}, seed=1)
    scaled = next(t for t in result.report.tensors if t.name == "transformer.h.2.mlp.c_proj.weight")
    assert scaled.expected_std == pytest.approx(0.02 / math.sqrt(2 * 3))
    assert model.lm_head.weight is model.transformer.wte.weight
