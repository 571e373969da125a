"""spec_from_module records what it can know of each layer: zero-centred norms, what follows a layer,
attention and residual roles; and says "unknown" where it cannot (issue 13, items 3 and 5)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client, spec_from_module
from initium.client._context import ZERO_CENTERED_NORMS, is_zero_centered

transformers = pytest.importorskip("transformers")


def _norm_class(name: str) -> type[torch.nn.Module]:
    module = importlib.import_module(
        f"transformers.models.{ZERO_CENTERED_NORMS[name]}.modeling_{ZERO_CENTERED_NORMS[name]}"
    )
    cls: type[torch.nn.Module] = getattr(module, name)
    return cls


def _scaled_output(norm: torch.nn.Module, value: float) -> torch.Tensor:
    with torch.no_grad():
        for name, p in norm.named_parameters():
            p.fill_(0.0 if "bias" in name else value)
        return norm(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", sorted(ZERO_CENTERED_NORMS))
def test_each_zero_centered_norm_multiplies_by_one_plus_its_weight(name: str) -> None:
    """Read from the class's own forward: scale 0 is a gain of 1 (plain normalization), scale 1 a gain of 2."""
    norm = _norm_class(name)(8)
    at_zero, at_one = _scaled_output(norm, 0.0), _scaled_output(norm, 1.0)
    assert at_zero.abs().max() > 0.1
    torch.testing.assert_close(at_one, 2 * at_zero)
    assert is_zero_centered(norm)
    manifest, _ = spec_from_module(torch.nn.Sequential(norm))
    assert [("zero_centered" in t.roles) for t in manifest.tensors] == [t.role == "weight" for t in manifest.tensors]


@pytest.mark.parametrize(
    "norm",
    [torch.nn.LayerNorm(8), torch.nn.RMSNorm(8), transformers.models.llama.modeling_llama.LlamaRMSNorm(8)],
    ids=["LayerNorm", "RMSNorm", "LlamaRMSNorm"],
)
def test_plain_norms_are_not_zero_centered(norm: torch.nn.Module) -> None:
    assert _scaled_output(norm, 0.0).abs().max() == 0
    assert not is_zero_centered(norm)
    manifest, _ = spec_from_module(torch.nn.Sequential(norm))
    assert not any("zero_centered" in t.roles for t in manifest.tensors)


def test_the_list_holds_every_such_class_of_the_installed_transformers() -> None:
    """Every modeling file's class whose forward adds 1 to its stored scale is in the one list."""
    offset = re.compile(
        r"1(\.0)? \+ self\.(weight|gamma)\b|self\.(weight|gamma)(\.float\(\))? \+ (1|self\.unit_offset)\b"
    )
    found = set()
    for path in Path(transformers.__file__).parent.glob("models/*/modeling_*.py"):
        text = path.read_text()
        for match in offset.finditer(text):
            owner = re.findall(r"^class (\w+)", text[: match.start()], flags=re.M)
            found.add(owner[-1])
    assert found and found <= set(ZERO_CENTERED_NORMS), found - set(ZERO_CENTERED_NORMS)


@pytest.fixture
def client(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


def _gemma() -> torch.nn.Module:
    config = transformers.GemmaConfig(
        num_hidden_layers=2, num_attention_heads=4, hidden_size=64, intermediate_size=128, num_key_value_heads=2,
        head_dim=16, vocab_size=120,
    )  # fmt: skip
    with torch.device("meta"):
        return transformers.GemmaForCausalLM(config)


@pytest.mark.parametrize("policy", ["auto", "llama", "torch-default", "bert"])
def test_gemma_norms_start_at_a_gain_of_one(client: Client, policy: str) -> None:
    model = _gemma()
    result = client.initialize_module(model, policy=policy, seed=0)
    norms = [n for n, m in model.named_modules() if type(m).__name__ == "GemmaRMSNorm"]
    assert norms and all(torch.equal(model.get_submodule(n).weight, torch.zeros(64)) for n in norms)
    planned = {t.name: t for t in result.report.tensors}
    assert all(planned[f"{n}.weight"].scheme == "zeros" for n in norms)


def test_gpt2_layers_know_what_follows_them(client: Client) -> None:
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=120, n_positions=64)
    manifest, _ = spec_from_module(transformers.GPT2LMHeadModel(config))
    by_name = {t.name: t for t in manifest.tensors}
    assert by_name["transformer.h.0.mlp.c_fc.weight"].followed_by == "gelu"
    assert by_name["transformer.h.0.mlp.c_proj.weight"].followed_by == "identity"
    assert "residual_output" in by_name["transformer.h.1.attn.c_proj.weight"].roles
    plan = client.plan(spec=manifest, policy="auto")
    chosen = {t.name: t for t in plan.tensors}
    assert chosen["transformer.h.0.mlp.c_fc.weight"].init.scheme == "kaiming_normal"  # type: ignore[union-attr]
    assert chosen["transformer.wte.weight"].init.scheme == "normal"  # type: ignore[union-attr]
    assert not any("no nonlinearity follows" in (t.reason or "") for t in plan.tensors if t.followed_by != "identity")


class _BasicBlock(torch.nn.Module):
    """torchvision's ResNet BasicBlock, as its attributes name it (torchvision itself is not installable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(8, 8, 3, bias=False), torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2, self.bn2 = torch.nn.Conv2d(8, 8, 3, bias=False), torch.nn.BatchNorm2d(8)


class _ResNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = torch.nn.Conv2d(3, 8, 7, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        self.layer1 = torch.nn.Sequential(_BasicBlock(), _BasicBlock())
        self.fc = torch.nn.Linear(8, 10)


def test_a_torchvision_style_resnet_is_relu_throughout() -> None:
    manifest, _ = spec_from_module(_ResNet())
    follows = {t.name: t.followed_by for t in manifest.tensors if t.name.endswith("weight") and "conv" in t.name}
    assert set(follows.values()) == {"relu"} and len(follows) == 5
    fc = next(t for t in manifest.tensors if t.name == "fc.weight")
    assert fc.followed_by == "identity" and "classifier" in fc.roles


def test_torch_transformer_layers_and_sequentials() -> None:
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, activation="gelu")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    follows = {t.name: t.followed_by for t in spec_from_module(layer)[0].tensors}
    assert follows["linear1.weight"] == "gelu" and follows["linear2.weight"] == "identity"
    follows = {t.name: t.followed_by for t in spec_from_module(model)[0].tensors}
    assert [follows[f"{i}.weight"] for i in (0, 2, 3)] == ["tanh", "identity", "identity"]


class _Opaque(torch.nn.Module):
    """Layers whose forward nobody can read from the module: what follows them is unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)


def test_unknown_is_said_and_auto_2_warns(client: Client) -> None:
    manifest, _ = spec_from_module(_Opaque())
    assert all(t.followed_by is None for t in manifest.tensors)
    old = client.plan(spec=manifest, policy="auto@1")
    assert {t.followed_by for t in old.tensors} == {"unknown"}
    assert old.tensors[0].init.scheme == "xavier_uniform"  # type: ignore[union-attr]  # auto@1's bytes stand
    new = client.plan(spec=manifest, policy="auto")
    assert new.preset == "auto@2" and new.tensors[0].init.scheme == "lecun_normal"  # type: ignore[union-attr]
    assert "unknown" in (new.tensors[0].reason or "")
    assert any("without knowing what follows" in w and "a.weight" in w for w in new.warnings)
    advised = manifest.model_copy(
        update={"tensors": [t.model_copy(update={"followed_by": "relu"}) for t in manifest.tensors]}
    )
    fixed = client.plan(spec=advised, policy="auto")
    assert not any("without knowing" in w for w in fixed.warnings)
    assert fixed.tensors[0].init.scheme == "kaiming_normal"  # type: ignore[union-attr]


class _PreActivation(torch.nn.Module):
    """The activation is registered before the layer: it may run first, so nothing is claimed."""

    def __init__(self) -> None:
        super().__init__()
        self.act, self.fc = torch.nn.ReLU(), torch.nn.Linear(8, 8)


def test_an_activation_registered_before_the_layer_is_not_taken_to_follow_it() -> None:
    assert {t.followed_by for t in spec_from_module(_PreActivation())[0].tensors} == {None}
