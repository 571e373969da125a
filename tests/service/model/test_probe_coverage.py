"""The probe and LSUV never fail a job, and a skip is never reported as a clean probe: cross-attention
gets a key and value of its own widths, a real CNN with pooling is probed end to end, and whatever
cannot run is named in the report's summary with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from initium.schemas.report import Report
from initium.service.jobs.store import REPORT, WEIGHTS, JobStore
from initium.service.model import probe
from tests.service.pipeline.test_job import run_job

CROSS = {"type": "multihead_attention", "name": "attn", "embed_dim": 64, "num_heads": 4, "kdim": 32, "vdim": 48}


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path)


def _run(store: JobStore, body: dict[str, Any]) -> Report:
    job_id = run_job(store, body)
    record = store.records.load(job_id)
    assert record.state == "succeeded", record.error
    return Report.model_validate_json(store.artifact(job_id, REPORT).read_bytes())


def _cnn(pooling: bool) -> dict[str, Any]:
    """torchvision's ResNet layout in small: stem, max pool, two basic blocks, global average pool, head."""
    stem = [
        {"type": "conv2d", "name": "conv1", "in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1,
         "bias": False},
        {"type": "batch_norm2d", "name": "bn1", "num_features": 16},
        {"type": "relu"},
    ]  # fmt: skip
    blocks = [
        {"type": "resnet_basic", "name": "layer1", "in_channels": 16, "channels": 16},
        {"type": "resnet_basic", "name": "layer2", "in_channels": 16, "channels": 32, "stride": 2},
    ]
    head = [{"type": "flatten"}, {"type": "linear", "name": "fc", "in_features": 32, "out_features": 10}]
    if pooling:
        stem.append({"type": "max_pool2d", "name": "maxpool", "kernel_size": 3, "stride": 2, "padding": 1})
        head.insert(0, {"type": "adaptive_avg_pool2d", "name": "avgpool", "output_size": 1})
    return {"spec": {"name": "cnn", "modules": [*stem, *blocks, *head]}, "policy": {"preset": "resnet-kaiming"},
            "report": {"probe_batch": 4}}  # fmt: skip


def test_cross_attention_is_probed_with_its_own_key_and_value_widths(store: JobStore) -> None:
    """kdim/vdim other than embed_dim used to get the query as key and value: the probe skipped it and
    LSUV failed the job. The key [.., 32] and value [.., 48] now come from the seeded probe stream."""
    body = {"spec": {"name": "x", "modules": [CROSS]}, "policy": {"preset": "auto"}}
    probe = _run(store, body).propagation
    assert probe is not None and probe.skipped is None
    assert [(layer.name, layer.type) for layer in probe.layers] == [("attn", "MultiheadAttention")]
    assert probe.layers[0].std > 0 and probe.layers[0].grad_std
    # Seeded: the same request probes the same numbers.
    again = _run(JobStore(store.root / "again"), body).propagation
    assert again is not None and again.layers[0].std == probe.layers[0].std


def test_lsuv_runs_through_cross_attention(store: JobStore) -> None:
    modules = [{"type": "linear", "name": "fc", "in_features": 8, "out_features": 64}, CROSS]
    body = {"spec": {"name": "x", "modules": modules}, "policy": {"preset": "auto", "lsuv": {}}}
    report = _run(store, body)
    # The attention's out_proj is applied inside torch's attention, never called: LSUV leaves it.
    assert report.lsuv is not None and [layer.name for layer in report.lsuv] == ["fc"]
    assert report.lsuv[0].converged and not any("skipped" in w for w in report.warnings)


def test_a_resnet_with_pooling_is_probed_end_to_end(store: JobStore) -> None:
    probe = _run(store, _cnn(pooling=True)).propagation
    assert probe is not None and probe.skipped is None and probe.probe_shape == [3, 32, 32]
    names = [layer.name for layer in probe.layers]
    for name in ("conv1", "layer1.conv1", "layer2.conv2", "layer2.downsample.0", "fc"):
        assert name in names
    assert all(layer.grad_std for layer in probe.layers if layer.type in ("Conv2d", "Linear"))
    assert probe.loss_name == "cross_entropy"


def test_a_skipped_probe_is_named_in_the_summary(store: JobStore) -> None:
    """Without pooling the head reads 32 features and gets 32 x 16 x 16: the probe skips, and the
    summary says so with the layer and the reason rather than reading as a clean probe."""
    report = _run(store, _cnn(pooling=False))
    assert report.propagation is not None and report.propagation.skipped is not None
    assert report.propagation.skipped.startswith("RuntimeError at fc (linear): mat1 and mat2 shapes")
    assert f"signal propagation skipped: {report.propagation.skipped}" in report.warnings


def test_lsuv_that_cannot_run_fails_the_job_naming_the_field(store: JobStore) -> None:
    """Unscaled draws would be bytes the request did not ask for, and a later release able to run
    the network would write others under the same id: the job fails and says what to change."""
    mismatched = [
        {"type": "linear", "in_features": 8, "out_features": 4},
        {"type": "linear", "in_features": 5, "out_features": 2},
    ]
    rules = [{"init": {"scheme": "normal", "std": 0.3}}]
    body = {"spec": {"name": "m", "modules": mismatched}, "policy": {"rules": rules, "lsuv": {"start": "policy"}}}
    job_id = run_job(store, body)
    record = store.records.load(job_id)
    assert record.state == "failed"
    assert record.error is not None and record.error.loc == ["policy", "lsuv"]
    message = record.error.message
    assert "LSUV cannot pass the probe batch" in message and "mat1 and mat2" in message and "policy.lsuv" in message
    assert not store.artifact(job_id, WEIGHTS).exists()


def test_lecun_tanh_saturation_is_recorded_and_auto_avoids_it(store: JobStore) -> None:
    modules: list[dict[str, Any]] = []
    for _ in range(4):
        modules += [{"type": "linear", "in_features": 32, "out_features": 32}, {"type": "lecun_tanh"}]
    big = {
        "rules": [{"init": {"scheme": "normal", "std": 1.0}}, {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]
    }
    loud = _run(store, {"spec": {"name": "t", "modules": modules}, "policy": big}).propagation
    assert loud is not None
    saturation = [layer.saturated_fraction for layer in loud.layers if layer.type == "LecunTanh"]
    assert len(saturation) == 4 and min(s or 0 for s in saturation) > 0.4
    assert any("LecunTanh units saturate" in w for w in loud.warnings)
    calm = _run(store, {"spec": {"name": "t", "modules": modules}, "policy": {"preset": "auto"}}).propagation
    assert calm is not None
    assert max(layer.saturated_fraction or 0 for layer in calm.layers if layer.type == "LecunTanh") < 0.05


def test_advice_that_fails_never_fails_the_job(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The advice re-probes the network with candidate fixes; when that fails, the probe's own
    findings stand, with the reason no fix is advised."""

    def failing(*args: object) -> None:
        raise RuntimeError("re-probe ran out of luck")

    monkeypatch.setattr(probe, "advise", failing)
    body = {"spec": {"name": "x", "modules": [CROSS]}, "policy": {"preset": "auto"}}
    report = _run(store, body)
    assert report.propagation is not None and report.propagation.layers
    note = "no fix advised: re-probing failed with RuntimeError: re-probe ran out of luck"
    assert note in report.propagation.warnings and note in report.warnings


def test_a_probe_asked_for_on_a_manifest_says_why_it_did_not_run(store: JobStore) -> None:
    manifest = {"name": "m", "tensors": [{"name": "w", "shape": [4, 4], "module_type": "linear"}]}
    body = {"spec": manifest, "policy": {"rules": [{"init": {"scheme": "normal"}}]}, "report": {"propagation": "on"}}
    report = _run(store, body)
    assert report.propagation is not None and "send a tree spec" in (report.propagation.skipped or "")
    assert f"signal propagation skipped: {report.propagation.skipped}" in report.warnings


def test_an_embedding_inside_a_sequential_is_fed_token_ids(store: JobStore) -> None:
    embedding = {"type": "embedding", "num_embeddings": 100, "embedding_dim": 16}
    modules = [{"type": "sequential", "modules": [embedding]}, {"type": "linear", "in_features": 16, "out_features": 4}]
    report = _run(store, {"spec": {"name": "m", "modules": modules}, "policy": {"preset": "auto"}})
    assert report.propagation is not None and report.propagation.skipped is None
    assert [layer.name for layer in report.propagation.layers] == ["0.0", "1"]


def test_a_global_average_pool_is_not_read_as_vanishing_gradients(store: JobStore) -> None:
    """Averaging over H x W positions divides the gradient's per-example norm by sqrt(H W) under any
    init: every correctly initialized CNN with a pooled head was warned "gradients vanish"."""
    modules = [
        {"type": "conv2d", "name": "stem", "in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "resnet_basic", "name": "block", "in_channels": 8, "channels": 8},
        {"type": "adaptive_avg_pool2d", "output_size": 1},
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "in_features": 8, "out_features": 10},
    ]
    report = _run(store, {"spec": {"name": "cnn", "modules": modules}, "policy": {"preset": "auto"}})
    assert report.propagation is not None and "AdaptiveAvgPool2d" in [x.type for x in report.propagation.layers]
    assert not any("gradients" in w for w in report.warnings), report.warnings


def test_a_post_norm_transformer_gets_a_real_gradient_and_no_warning(store: JobStore) -> None:
    """Half the mean square of a LayerNorm's output is a constant: its gradients were rounding noise
    (1e-10) and every post-norm transformer was told "gradients vanish" (issue 15, 20 of 20 seeds)."""
    block = {"type": "transformer_block", "d_model": 32, "n_heads": 4, "mlp_hidden": 64, "norm_first": False}
    spec = {"name": "enc", "modules": [{"type": "repeat", "name": "layers", "count": 2, "block": block}]}
    report = _run(store, {"spec": spec, "policy": {"preset": "torch-default"}, "report": {"probe_batch": 8}})
    assert report.propagation is not None and report.propagation.loss_name == "random_projection"
    norms = [x.grad_norm for x in report.propagation.layers if x.type == "block"]
    assert len(norms) == 2 and all(n is not None and n > 1e-3 for n in norms)
    assert not any("gradients" in w for w in report.warnings), report.warnings
