"""Pooling in the spec tree: each spec builds the torch module with exactly its arguments, torch's
own limits are refused up front with the field named, and a weight's follower passes through a pool."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import TypeAdapter, ValidationError

from initium.schemas import InitRequest
from initium.schemas import spec as s
from initium.service.model.modules import LecunTanh, build_module
from initium.service.plan.planner import make_plan

MODULE: TypeAdapter[Any] = TypeAdapter(s.Module)

# spec -> the torch functional call with the same arguments, on an input of that many spatial dims.
CASES: list[tuple[dict[str, Any], Any, int]] = [
    ({"type": "max_pool1d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
     lambda x: F.max_pool1d(x, 3, 2, 1, ceil_mode=True), 1),
    ({"type": "max_pool2d", "kernel_size": [2, 3], "dilation": 2},
     lambda x: F.max_pool2d(x, (2, 3), (2, 3), dilation=2), 2),
    ({"type": "max_pool3d", "kernel_size": 2, "stride": 1}, lambda x: F.max_pool3d(x, 2, 1), 3),
    ({"type": "avg_pool1d", "kernel_size": 4, "padding": 2, "count_include_pad": False},
     lambda x: F.avg_pool1d(x, 4, 4, 2, count_include_pad=False), 1),
    ({"type": "avg_pool2d", "kernel_size": 3, "stride": 1, "padding": 1, "divisor_override": 4},
     lambda x: F.avg_pool2d(x, 3, 1, 1, divisor_override=4), 2),
    ({"type": "avg_pool3d", "kernel_size": [1, 2, 2], "ceil_mode": True},
     lambda x: F.avg_pool3d(x, (1, 2, 2), ceil_mode=True), 3),
    ({"type": "adaptive_avg_pool1d", "output_size": 3}, lambda x: F.adaptive_avg_pool1d(x, 3), 1),
    ({"type": "adaptive_avg_pool2d", "output_size": [None, 2]}, lambda x: F.adaptive_avg_pool2d(x, (None, 2)), 2),
    ({"type": "adaptive_avg_pool3d", "output_size": 1}, lambda x: F.adaptive_avg_pool3d(x, 1), 3),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "reference", "dims"), CASES, ids=[c[0]["type"] for c in CASES])
def test_pooling_builds_torchs_module_with_the_specs_arguments(spec: dict[str, Any], reference: Any, dims: int) -> None:
    x = torch.randn((2, 3, *[7] * dims), generator=torch.Generator().manual_seed(0))
    assert torch.equal(build_module(MODULE.validate_python(spec))(x), reference(x))


def test_every_pooling_type_is_covered() -> None:
    assert sorted(c[0]["type"] for c in CASES) == sorted(s.POOLING_TYPES)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "max_pool2d", "kernel_size": 3, "padding": 2}, "padding"),
        ({"type": "avg_pool1d", "kernel_size": 0}, "kernel_size"),
        ({"type": "max_pool3d", "kernel_size": [2, 2]}, "kernel_size"),
        ({"type": "max_pool1d", "kernel_size": 2, "dilation": 0}, "dilation"),
        ({"type": "avg_pool2d", "kernel_size": 2, "divisor_override": 0}, "divisor_override"),
        ({"type": "adaptive_avg_pool2d", "output_size": [1, 1, 1]}, "output_size"),
    ],
)
def test_what_torch_refuses_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        MODULE.validate_python(spec)


def test_a_pool_between_a_conv_and_its_relu_passes_the_relu_on() -> None:
    """conv -> max_pool -> relu equals conv -> relu -> max_pool (max commutes with relu): auto gives He."""
    modules = [
        {"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "relu"},
        {"type": "adaptive_avg_pool2d", "output_size": 1},
        {"type": "flatten"},
        {"type": "linear", "in_features": 8, "out_features": 4},
        {"type": "avg_pool1d", "kernel_size": 1},
        {"type": "lecun_tanh"},
    ]
    plan = make_plan(
        InitRequest.model_validate({"spec": {"name": "c", "modules": modules}, "policy": {"preset": "auto"}})
    )
    weights = {t.name: t for t in plan.tensors if t.name.endswith("weight")}
    conv, head = weights["0.weight"], weights["5.weight"]
    assert conv.followed_by == "relu" and conv.init is not None and conv.init.scheme == "kaiming_normal"
    assert head.followed_by == "lecun_tanh" and head.init is not None
    assert head.init.model_dump() == {"scheme": "xavier_normal", "gain": pytest.approx(1.1543694539761433)}


def test_lecun_tanh_is_lecuns_function() -> None:
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert torch.equal(LecunTanh()(x), 1.7159 * torch.tanh(x * (2.0 / 3.0)))
    assert LecunTanh()(torch.tensor([1.0], dtype=torch.float64)).item() == pytest.approx(1.0, abs=1e-4)
