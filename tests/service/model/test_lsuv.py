"""LSUV: every layer's output variance within its tolerance of the target, the rescaled values
written, reproducible from the request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from initium.schemas import InitRequest
from initium.schemas.report import Report
from initium.service.errors import RequestInvalidError
from initium.service.jobs.store import REPORT, WEIGHTS, JobStore
from initium.service.materialize.tensor import materialize
from initium.service.plan.planner import make_plan
from tests.service.pipeline.test_job import run_job


def _deep(activation: str, lsuv: dict[str, Any], depth: int = 20) -> dict[str, Any]:
    modules: list[dict[str, Any]] = []
    for _ in range(depth):
        modules += [{"type": "linear", "in_features": 96, "out_features": 96}, {"type": activation}]
    rules = [{"init": {"scheme": "normal"}}, {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]
    return {"spec": {"name": "deep", "modules": modules}, "policy": {"rules": rules, "lsuv": lsuv}, "seed": 11}


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_every_layer_ends_within_tolerance(tmp_path: Path, activation: str) -> None:
    store = JobStore(tmp_path)
    report = Report.model_validate_json(
        store.artifact(run_job(store, _deep(activation, {"tolerance": 0.05})), REPORT).read_bytes()
    )
    assert report.lsuv is not None and len(report.lsuv) == 20
    assert all(layer.converged and abs(layer.std_after - 1.0) <= 0.05 for layer in report.lsuv)
    assert report.tensors[0].rule == "lsuv:orthonormal start"
    # The probe of the written file sees the same: unit variance at every layer.
    assert report.propagation is not None
    stds = [layer.std for layer in report.propagation.layers if layer.type == "Linear"]
    assert all(abs(std - 1.0) <= 0.05 for std in stds), stds


def test_written_values_are_the_draws_times_the_scale_and_reproducible(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    body = _deep("tanh", {"start": "policy"}, depth=4)
    job_id = run_job(store, body)
    report = Report.model_validate_json(store.artifact(job_id, REPORT).read_bytes())
    assert report.lsuv is not None and report.tensors[0].scheme == "normal"
    plan = make_plan(InitRequest.model_validate(body))
    written = load_file(store.artifact(job_id, WEIGHTS))
    for layer in report.lsuv:
        planned = next(t for t in plan.tensors if t.name == f"{layer.name}.weight")
        assert torch.equal(written[planned.name], materialize(planned, 11, torch.device("cpu"), layer.scale))
    again = run_job(JobStore(tmp_path / "again"), body)
    assert JobStore(tmp_path / "again").records.load(again).sha256 == store.records.load(job_id).sha256


def test_lsuv_needs_a_tree_spec() -> None:
    body = {"spec": {"name": "m", "tensors": [{"name": "w", "shape": [4, 4], "module_type": "linear"}]},
            "policy": {"rules": [{"init": {"scheme": "normal"}}], "lsuv": {}}}  # fmt: skip
    with pytest.raises(RequestInvalidError, match="tree spec") as info:
        make_plan(InitRequest.model_validate(body))
    assert info.value.loc == ["policy", "lsuv"]
