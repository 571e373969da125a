"""spec_from_module and initialize_module: a torch module described as a manifest plans and
generates exactly what its tree spec does, ties and the meta device included."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client, spec_from_module
from initium.schemas import InitRequest
from initium.service.materialize.tensor import materialize
from initium.service.model.modules import build
from initium.service.plan.planner import make_plan
from tests.schemas.test_presets import ZOO

# A torch module does not say which Linear is a query projection; the tree's transformer block does.
ATTENTION_ROLES = {
    "*.q_proj.*": ["query"], "*.k_proj.*": ["key"], "*.v_proj.*": ["value"],
    "*.o_proj.*": ["attention_output", "residual_output"], "*.fc2.*": ["residual_output"],
    "*.down_proj.*": ["residual_output"], "layer1.*.conv2.*": ["residual_output"], "layer1.*.bn2.*": ["residual_norm"],
    "layer2.conv3.*": ["residual_output"], "layer2.bn3.*": ["residual_norm"],
}  # fmt: skip


@pytest.fixture
def client(app_client: TestClient) -> Client:
    return Client(http_client=app_client)


@pytest.mark.parametrize("preset", ["torch-default", "keras-default", "flax-default", "gpt2", "fixup"])
def test_a_module_plans_and_draws_like_its_tree_spec(preset: str) -> None:
    """Same names, shapes, fans, parts and laws: the values are identical, tensor for tensor.

    Residual branches are known to the tree only, so fixup (whose laws depend on them) is compared
    on names. (auto is not compared: it needs what follows each layer, which a torch module reveals
    only inside an nn.Sequential; see the meta-device test.)"""
    tree = InitRequest.model_validate({"spec": {"name": "zoo", "modules": ZOO}, "policy": {"preset": preset}})
    manifest, aliases = spec_from_module(build(tree.spec), roles=ATTENTION_ROLES)
    as_manifest = tree.model_copy(update={"spec": manifest})
    tree_plan, manifest_plan = make_plan(tree), make_plan(as_manifest)
    assert aliases == {}
    assert [(t.name, t.shape) for t in manifest_plan.tensors] == [(t.name, t.shape) for t in tree_plan.tensors]
    if preset == "fixup":
        return
    for ours, theirs in zip(manifest_plan.tensors, tree_plan.tensors, strict=True):
        assert (ours.fan_in, ours.fan_out, ours.expected_std) == (theirs.fan_in, theirs.fan_out, theirs.expected_std), (
            ours.name
        )
        if ours.elementwise and ours.shape and min(ours.shape) > 0:
            assert torch.equal(materialize(ours, 1, torch.device("cpu")), materialize(theirs, 1, torch.device("cpu")))


def test_tied_weights_are_generated_once_and_stay_tied(client: Client) -> None:
    class TiedLM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(40, 16)
            self.head = torch.nn.Linear(16, 40, bias=False)
            self.head.weight = self.embed.weight

    model = TiedLM()
    manifest, aliases = spec_from_module(model)
    assert [t.name for t in manifest.tensors] == ["embed.weight"] and aliases == {"head.weight": "embed.weight"}
    result = client.initialize_module(model, policy={"preset": "gpt2"}, seed=5)
    assert model.head.weight is model.embed.weight
    assert torch.equal(model.embed.weight.detach(), result.tensors["embed.weight"])


def test_initialize_module_on_the_meta_device(client: Client) -> None:
    with torch.device("meta"):
        layers = [torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten()]
        model = torch.nn.Sequential(*layers, torch.nn.Linear(8, 4))
    result = client.initialize_module(model, policy={"preset": "auto"}, seed=3)
    assert not any(p.is_meta for p in model.parameters())
    assert torch.equal(model[1].running_var, torch.ones(8)) and int(model[1].num_batches_tracked) == 0
    assert result.report.tensors[0].scheme == "kaiming_normal"
    assert model[0].weight.std().item() == pytest.approx((2 / 27) ** 0.5, rel=0.15)


def test_roles_tag_tensors_by_name(client: Client) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    manifest, _ = spec_from_module(model, roles={"1.*": ["classifier"]})
    assert [t.roles for t in manifest.tensors] == [[], [], ["classifier"], ["classifier"]]
    client.initialize_module(model, policy={"preset": "mup"}, roles={"1.*": ["classifier"]})
    assert model[1].weight.abs().max().item() == 0.0
