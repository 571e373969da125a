"""Signal propagation as a user meets it: deep tanh and ReLU MLPs under good and bad inits, heads,
transformer and ResNet blocks, and the cases the probe skips."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from initium.schemas.report import Report
from initium.service.jobs.store import REPORT, JobStore
from tests.service.pipeline.test_job import run_job


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path)


def _mlp(activation: str, init: dict[str, Any], depth: int = 30, width: int = 128, **extra: Any) -> dict[str, Any]:
    modules: list[dict[str, Any]] = []
    for _ in range(depth):
        modules += [{"type": "linear", "in_features": width, "out_features": width}, {"type": activation}]
    rules = [{"match": {"role": "bias"}, "init": {"scheme": "zeros"}}, {"match": {"role": "weight"}, "init": init}]
    return {"spec": {"name": "deep", "modules": modules}, "policy": {"rules": rules}, **extra}


def _report(store: JobStore, body: dict[str, Any]) -> Report:
    return Report.model_validate_json(store.artifact(run_job(store, body), REPORT).read_bytes())


def test_tanh_with_unit_normal_weights_saturates_and_xavier_does_not(store: JobStore) -> None:
    bad = _report(store, _mlp("tanh", {"scheme": "normal"})).propagation
    assert bad is not None and any("Tanh units saturate" in w and "xavier_normal" in w for w in bad.warnings)
    good = _report(store, _mlp("tanh", {"scheme": "xavier_normal"})).propagation
    assert good is not None and good.warnings == []


def test_relu_with_xavier_shrinks_and_kaiming_does_not(store: JobStore) -> None:
    report = _report(store, _mlp("relu", {"scheme": "xavier_normal"}))
    assert report.propagation is not None
    shrink = [w for w in report.propagation.warnings if w.startswith("activations shrink across depth")]
    assert len(shrink) == 1 and "kaiming_normal" in shrink[0] and shrink[0] in report.warnings
    kaiming = _report(store, _mlp("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"})).propagation
    assert kaiming is not None and kaiming.warnings == []
    stds = [layer.std for layer in kaiming.layers if layer.type == "Linear"]
    assert max(stds) / min(stds) < 3 and all(layer.grad_std for layer in kaiming.layers if layer.type == "Linear")


def test_a_classifier_head_is_compared_with_log_c(store: JobStore) -> None:
    body = _mlp("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}, depth=2)
    body["spec"]["modules"].append({"type": "linear", "in_features": 128, "out_features": 10})
    ok = _report(store, body).propagation
    assert ok is not None and ok.loss_name == "cross_entropy" and ok.loss_at_chance == pytest.approx(math.log(10))
    body["spec"]["modules"][-1]["name"] = "head"
    body["policy"]["rules"].append({"match": {"name": "head.weight"}, "init": {"scheme": "normal", "std": 30.0}})
    loud = _report(store, body).propagation
    assert loud is not None and any("far from log(C)" in w for w in loud.warnings)


def test_dead_relus_are_reported(store: JobStore) -> None:
    body = _mlp("relu", {"scheme": "kaiming_normal", "nonlinearity": "relu"}, depth=3)
    body["policy"]["rules"][0]["init"] = {"scheme": "constant", "value": -5.0}
    report = _report(store, body).propagation
    assert report is not None and any("never fire" in w for w in report.warnings)


BLOCK = {"type": "transformer_block", "d_model": 32, "n_heads": 4}


def test_transformer_and_resnet_blocks_propagate(store: JobStore) -> None:
    gpt = {"spec": {"name": "g", "modules": [
        {"type": "embedding", "name": "wte", "num_embeddings": 50, "embedding_dim": 32},
        {"type": "repeat", "name": "h", "count": 3, "block": BLOCK},
        {"type": "linear", "name": "head", "in_features": 32, "out_features": 50, "bias": False},
    ]}, "policy": {"preset": "gpt2"}}  # fmt: skip
    report = _report(store, gpt).propagation
    assert report is not None and report.skipped is None and report.probe_shape == [16]
    assert any(layer.name == "h.2.attn.o_proj" and layer.grad_std for layer in report.layers)
    # Between blocks the residual stream is compared, not the deliberately small scaled projections.
    assert [layer.name for layer in report.layers if layer.type == "block"] == ["h.0", "h.1", "h.2"]
    assert report.warnings == [] and report.loss_name == "cross_entropy"
    resnet = {"spec": {"name": "r", "modules": [
        {"type": "conv2d", "name": "stem", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "resnet_basic", "name": "b", "in_channels": 8, "channels": 8},
    ]}, "policy": {"preset": "resnet-kaiming"}, "report": {"probe_batch": 4}}  # fmt: skip
    report = _report(store, resnet).propagation
    assert report is not None and report.probe_shape == [3, 32, 32] and any(x.name == "b.conv2" for x in report.layers)


def test_the_probe_skips_what_it_cannot_run(store: JobStore) -> None:
    mismatched = {"spec": {"name": "m", "modules": [
        {"type": "linear", "in_features": 8, "out_features": 4},
        {"type": "linear", "in_features": 5, "out_features": 2},
    ]}, "policy": {"preset": "xavier"}}  # fmt: skip
    skipped = _report(store, mismatched).propagation
    assert skipped is not None and skipped.skipped is not None and "RuntimeError" in skipped.skipped
    sliced = {**mismatched, "slices": {"0.weight": [[0, 2], [0, 8]]}}
    assert "slices" in (_report(store, sliced).propagation.skipped or "")  # type: ignore[union-attr]
    off = {**mismatched, "report": {"propagation": "off"}}
    assert _report(store, off).propagation is None
    manifest = {
        "spec": {"name": "m", "tensors": [{"name": "w", "shape": [4, 4]}]},
        "policy": {"rules": [{"init": {"scheme": "normal"}}]},
    }
    assert _report(store, manifest).propagation is None


@pytest.mark.parametrize(
    "first",
    [{"type": "sequential", "modules": []}, {"type": "sequential", "modules": [{"type": "sequential", "modules": []}]}],
    ids=["empty", "nested-empty"],
)
def test_a_probe_that_cannot_start_is_skipped_and_the_job_succeeds(store: JobStore, first: dict[str, Any]) -> None:
    """An empty container first used to raise IndexError out of the probe and fail a finished job:
    a statistic that cannot be computed is reported with the reason, never a failed job."""
    body = {"spec": {"name": "m", "modules": [first, {"type": "linear", "in_features": 4, "out_features": 4}]},
            "policy": {"preset": "xavier"}, "report": {"propagation": "on"}}  # fmt: skip
    job_id = run_job(store, body)
    record = store.records.load(job_id)
    assert record.state == "succeeded", record.error
    skipped = _report(store, body).propagation
    assert skipped is not None and "empty sequential" in (skipped.skipped or "") and "probe_shape" in skipped.skipped
    # The advice works: with report.probe_shape given, the probe runs.
    probed = _report(store, {**body, "report": {"propagation": "on", "probe_shape": [4]}}).propagation
    assert probed is not None and probed.skipped is None and probed.layers
