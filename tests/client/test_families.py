"""The t5 and vit presets against transformers' own init (two-sample KS), and the manifest fields
spec_from_module adds for T5."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from scipy import stats

from initium.client import spec_from_module
from initium.schemas import InitRequest
from initium.service.materialize.tensor import materialize
from initium.service.plan.planner import make_plan
from tests.client.test_transformers import SMALL, _own_init

transformers = pytest.importorskip("transformers")


def _t5() -> torch.nn.Module:
    config = transformers.T5Config(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=120)
    return transformers.T5ForConditionalGeneration(config)


def _vit() -> torch.nn.Module:
    return transformers.ViTModel(transformers.ViTConfig(**SMALL, image_size=32, patch_size=8), use_mask_token=True)


MODELS: dict[str, Callable[[], torch.nn.Module]] = {"t5": _t5, "vit": _vit}


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_preset_draws_what_the_model_draws(preset: str) -> None:
    build = MODELS[preset]
    theirs = _own_init(build, copies=3)
    manifest, aliases = spec_from_module(build())
    plan = make_plan(InitRequest.model_validate({"spec": manifest, "policy": {"preset": preset}}))
    assert plan.uncovered == [] and {t.name for t in plan.tensors} | set(aliases) == set(theirs)
    for t in plan.tensors:
        mine = torch.cat([materialize(t, seed, torch.device("cpu")).double().ravel() for seed in range(3)])
        reference = theirs[t.name]
        if reference.std() == 0 or reference.numel() < 300:
            assert torch.allclose(mine.mean(), reference.mean(), atol=0.05 + 3 * float(reference.std())), t.name
            assert float(mine.std()) <= 1.5 * float(reference.std()) + 1e-12, t.name
            continue
        assert stats.ks_2samp(mine.numpy(), reference.numpy()).pvalue > 1e-4, t.name


def test_t5_manifest_carries_head_width_roles_and_the_bias_fan_in() -> None:
    manifest, _ = spec_from_module(_t5())
    by_name = {t.name: t for t in manifest.tensors}
    attention = "encoder.block.0.layer.0.SelfAttention"
    q = by_name[f"{attention}.q.weight"]
    assert q.roles == ["query"] and q.head_dim == 16
    assert by_name[f"{attention}.k.weight"].roles == ["key"] and by_name[f"{attention}.k.weight"].head_dim is None
    assert by_name[f"{attention}.o.weight"].roles == ["attention_output", "residual_output"]
    assert by_name["encoder.block.0.layer.1.DenseReluDense.wo.weight"].roles == ["residual_output"]
    assert by_name[f"{attention}.relative_attention_bias.weight"].fan_in == 64  # d_model
    plain, _ = spec_from_module(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    assert plain.tensors[0].roles == [] and plain.tensors[0].head_dim is None
