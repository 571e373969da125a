"""Materializing fused tensors: blocks along any axis, each its own stream, any slice equal to the whole's."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.plan import PlannedTensor
from initium.service.identity import tensor_key
from initium.service.materialize.sampling import Stream, sample
from initium.service.materialize.tensor import materialize
from initium.service.plan.distributions import planned_distribution
from initium.service.plan.planner import make_plan

CPU = torch.device("cpu")
QKV = ["query", "key", "value"]
C_ATTN = {"name": "h.0.attn.c_attn.weight", "shape": [64, 192], "module_type": "linear", "fan_in": 64,
          "fan_out": 192, "parts": {"axis": 1, "sizes": [64, 64, 64], "roles": QKV}}  # fmt: skip


def _planned(spec: dict[str, Any], rules: list[dict[str, Any]], name: str) -> PlannedTensor:
    plan = make_plan(InitRequest.model_validate({"spec": spec, "policy": {"rules": rules}}))
    return next(t for t in plan.tensors if t.name == name)


def _c_attn(scheme: str) -> PlannedTensor:
    return _planned({"name": "m", "tensors": [C_ATTN]}, [{"init": {"scheme": scheme}}], "h.0.attn.c_attn.weight")


@pytest.mark.parametrize("scheme", ["xavier_uniform", "orthogonal"])
@pytest.mark.parametrize("box", [[(0, 64), (50, 150)], [(10, 40), (0, 192)], [(3, 9), (64, 128)], [(0, 64), (70, 80)]])
def test_a_slice_of_an_axis_1_fused_tensor_is_that_slice_of_the_whole(scheme: str, box: list[tuple[int, int]]) -> None:
    planned = _c_attn(scheme)
    whole = materialize(planned, 5, CPU)
    part = materialize(planned.model_copy(update={"slice": box}), 5, CPU)
    assert torch.equal(part, whole[box[0][0] : box[0][1], box[1][0] : box[1][1]])


def test_each_axis_1_block_is_drawn_from_its_own_key() -> None:
    planned = _c_attn("orthogonal")
    whole = materialize(planned, 5, CPU)
    assert planned.parts is not None
    for p in planned.parts:
        start, stop = p.rows
        stream = Stream(tensor_key(5, f"h.0.attn.c_attn.weight[:, {start}:{stop}]"), CPU)
        alone = sample(planned_distribution(p), (64, stop - start), stream, None, torch.float32)
        assert torch.equal(whole[:, start:stop], alone)
        # Each block is its own orthogonal matrix, not a slice of one [64, 192] matrix.
        block = whole[:, start:stop].double()
        assert torch.allclose(block @ block.T, torch.eye(64, dtype=torch.float64), atol=1e-5)


def test_axis_0_blocks_keep_the_packed_key_format() -> None:
    """A manifest's declared axis-0 blocks draw exactly what nn.MultiheadAttention's in_proj_weight
    (whose key format, name[start:stop], fixes every existing packed tensor's bytes) draws."""
    rules = [{"init": {"scheme": "normal", "std": 0.02}}]
    tree = {"name": "t", "modules": [{"type": "multihead_attention", "name": "attn", "embed_dim": 64, "num_heads": 4}]}
    packed = _planned(tree, rules, "attn.in_proj_weight")
    fused = {"name": "attn.in_proj_weight", "shape": [192, 64], "module_type": "linear",
             "parts": {"axis": 0, "sizes": [64, 64, 64], "roles": QKV}}  # fmt: skip
    declared = _planned({"name": "m", "tensors": [fused]}, rules, "attn.in_proj_weight")
    values = materialize(packed, 11, CPU)
    assert torch.equal(materialize(declared, 11, CPU), values)
    assert packed.parts is not None
    stream = Stream(tensor_key(11, "attn.in_proj_weight[64:128]"), CPU)
    key_block = sample(planned_distribution(packed.parts[1]), (64, 64), stream, None, torch.float32)
    assert torch.equal(values[64:128], key_block)


def test_an_lsuv_scale_multiplies_every_axis_1_block() -> None:
    planned = _c_attn("xavier_uniform")
    plain = materialize(planned, 2, CPU).double()
    scaled = materialize(planned, 2, CPU, scale=0.5).double()
    assert torch.allclose(scaled, plain * 0.5, rtol=1e-6)
