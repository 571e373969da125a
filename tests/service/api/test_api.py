"""The HTTP contract, in-process against the real app and its real worker process."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.client import Client
from initium.schemas.catalog import SchemeList
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset, list_presets
from initium.schemas.report import Report
from initium.service.plan.schemes import list_schemes
from tests.conftest import wait_for_job


def _submit_and_wait(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/initializations", json=body)
    assert response.status_code in (200, 202), response.text
    return wait_for_job(client, response.json()["id"])


def _assert_error(response: Any, status: int, type_: str, loc: list[Any] | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"type", "message", "loc"} and error["type"] == type_
    if loc is not None:
        assert error["loc"] == loc
    return error


def test_submit_poll_download(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    mlp_request["seed"] = 1234  # a job no other test has submitted
    first = app_client.post("/v1/initializations", json=mlp_request)
    assert first.status_code == 202
    status = JobStatus.model_validate(first.json())
    assert status.state in ("queued", "running", "succeeded")
    assert first.headers["location"] == status.links.self == f"/v1/initializations/{status.id}"
    done = wait_for_job(app_client, status.id)
    assert done["state"] == "succeeded" and done["progress"]["tensors_done"] == 4
    weights = app_client.get(done["links"]["weights"])
    assert weights.status_code == 200
    assert weights.headers["etag"] == f'"{done["sha256"]}"'
    assert hashlib.sha256(weights.content).hexdigest() == done["sha256"]
    assert int(weights.headers["content-length"]) == done["size"]


def test_repeat_is_200_with_the_same_id_and_bytes(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    done = _submit_and_wait(app_client, mlp_request)
    again = app_client.post("/v1/initializations", json=mlp_request)
    assert again.status_code == 200 and again.json()["id"] == done["id"]
    assert again.json()["sha256"] == done["sha256"]
    other = _submit_and_wait(app_client, {**mlp_request, "seed": 8})
    assert other["id"] != done["id"] and other["sha256"] != done["sha256"]


def test_equivalent_requests_share_an_id(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    explicit = copy.deepcopy(mlp_request)
    explicit["policy"]["rules"][0]["init"].update({"mode": "fan_in", "negative_slope": 0.0})
    a = app_client.post("/v1/plans", json=mlp_request).json()["request_id"]
    b = app_client.post("/v1/plans", json=explicit).json()["request_id"]
    assert a == b


def test_range_requests(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    done = _submit_and_wait(app_client, mlp_request)
    url = done["links"]["weights"]
    whole = app_client.get(url).content
    part = app_client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    resumed = app_client.get(url, headers={"Range": "bytes=1000-", "If-Range": f'"{done["sha256"]}"'})
    assert resumed.status_code == 206 and resumed.content == whole[1000:]
    stale = app_client.get(url, headers={"Range": "bytes=1000-", "If-Range": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.content == whole
    assert app_client.get(url, headers={"Range": f"bytes={len(whole) + 10}-"}).status_code == 416


def test_report_json_and_html(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    done = _submit_and_wait(app_client, mlp_request)
    report = Report.model_validate(app_client.get(done["links"]["report"]).json())
    assert [t.name for t in report.tensors] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert report.artifact.sha256 == done["sha256"]
    html = app_client.get(done["links"]["report_html"])
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "fc1.weight" in html.text and done["sha256"] in html.text


def test_plan_endpoint_generates_nothing(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    mlp_request["seed"] = 99_999
    mlp_request["policy"]["rules"].append({"match": {"type": "conv2d"}, "init": {"scheme": "ones"}})
    response = app_client.post("/v1/plans", json=mlp_request)
    assert response.status_code == 200
    plan = Plan.model_validate(response.json())
    assert plan.unused_rules == ["policy.rules[2]"]
    assert plan.tensors[0].expected_std == pytest.approx((2 / 784) ** 0.5)
    _assert_error(app_client.get(f"/v1/initializations/{plan.request_id}"), 404, "not_found")


@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda r: r["spec"]["modules"][0].update(in_features=-3), ["spec", "modules", 0, "in_features"]),
        (lambda r: r["spec"]["modules"][0].update(type="linearr"), ["spec", "modules", 0]),
        (lambda r: r.update(dtype="int8"), ["dtype"]),
        (lambda r: r["policy"]["rules"][0]["init"].update(scheme="kaiming"), ["policy", "rules", 0, "init"]),
        (lambda r: r.update(extra=1), ["extra"]),
        (lambda r: r.pop("spec"), ["spec"]),
    ],
)
def test_invalid_requests_are_422_naming_the_field(
    app_client: TestClient, mlp_request: dict[str, Any], mutate: Any, loc: list[Any]
) -> None:
    mutate(mlp_request)
    for path in ("/v1/initializations", "/v1/plans"):
        error = _assert_error(app_client.post(path, json=mlp_request), 422, "validation_error")
        assert error["loc"][: len(loc)] == loc
        assert str(loc[-1]) in error["message"]


def test_negative_in_features_message(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    mlp_request["spec"]["modules"][0]["in_features"] = -1
    error = _assert_error(app_client.post("/v1/initializations", json=mlp_request), 422, "validation_error")
    assert error["message"] == "spec.modules[0].in_features: Input should be greater than 0 (got -1)"


def test_uncovered_parameters_are_refused_at_submit(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    mlp_request["policy"]["rules"].pop()  # no rule for biases
    error = _assert_error(app_client.post("/v1/initializations", json=mlp_request), 422, "validation_error")
    assert "fc1.bias" in error["message"] and error["loc"] == ["policy", "rules"]


def test_not_json_and_oversized(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    bad = app_client.post("/v1/initializations", content=b"{not json", headers={"content-type": "application/json"})
    assert "line 1, column 2" in _assert_error(bad, 400, "invalid_json", [])["message"]  # issue 16 item 13
    mlp_request["spec"]["modules"][0]["in_features"] = 10**8
    error = _assert_error(app_client.post("/v1/initializations", json=mlp_request), 413, "limit_exceeded", ["spec"])
    assert "50,000,000" in error["message"]


def test_unknown_ids_and_routes_are_404(app_client: TestClient) -> None:
    for job_id in ("0" * 64, "../../etc/passwd", "XYZ"):
        for suffix in ("", "/weights", "/report", "/report.html"):
            _assert_error(app_client.get(f"/v1/initializations/{job_id}{suffix}"), 404, "not_found")
    _assert_error(app_client.get("/v1/nothing"), 404, "not_found")
    not_allowed = app_client.delete("/v1/schemes")
    _assert_error(not_allowed, 405, "method_not_allowed")
    assert not_allowed.headers["allow"] == "GET"  # RFC 9110: a 405 names the methods that work


def test_schemes_and_presets_catalogs(app_client: TestClient) -> None:
    schemes = SchemeList.model_validate(app_client.get("/v1/schemes").json())
    assert sorted(s.name for s in schemes.schemes) == sorted(list_schemes())
    kaiming = next(s for s in schemes.schemes if s.name == "kaiming_normal")
    assert {"mode", "nonlinearity", "negative_slope"} <= set(kaiming.params_schema["properties"])
    presets = app_client.get("/v1/presets").json()["presets"]
    assert {(p.name, p.version) for p in list_presets()} <= {(p["name"], p["version"]) for p in presets}


def test_health_ready_metrics(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    ready = app_client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["worker"] == "ok"
    metrics = app_client.get("/metrics")
    assert metrics.status_code == 200
    assert 'initium_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text
    assert "initium_queue_depth" in metrics.text


def test_openapi_lists_the_contract(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/initializations",
        "/v1/initializations/{job_id}",
        "/v1/initializations/{job_id}/weights",
        "/v1/initializations/{job_id}/report",
        "/v1/initializations/{job_id}/report.html",
        "/v1/plans",
        "/v1/schemes",
        "/v1/presets",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths


PLATFORM = {
    "name": "acme-mlp",
    "version": 1,
    "description": "ACME's house MLP init: orthogonal weights, zero biases.",
    "rules": [
        {"match": {"role": "weight"}, "init": {"scheme": "orthogonal"}},
        {"match": {"role": "bias"}, "init": {"scheme": "zeros"}},
    ],
}


def test_publish_list_fetch_and_use_a_platform_preset(app_client: TestClient, mlp_request: dict[str, Any]) -> None:
    created = app_client.post("/v1/presets", json=PLATFORM)
    assert created.status_code in (200, 201) and created.headers["location"] == "/v1/presets/acme-mlp@1"
    assert app_client.post("/v1/presets", json=PLATFORM).status_code == 200  # identical: a no-op
    changed = {**PLATFORM, "rules": PLATFORM["rules"][:1]}
    error = _assert_error(app_client.post("/v1/presets", json=changed), 409, "conflict", ["version"])
    assert "acme-mlp@2" in error["message"]
    _assert_error(app_client.post("/v1/presets", json={**PLATFORM, "name": "gpt2"}), 409, "conflict", ["name"])
    names = [(p["name"], p["version"]) for p in app_client.get("/v1/presets").json()["presets"]]
    assert ("acme-mlp", 1) in names and ("gpt2", 1) in names
    fetched = Preset.model_validate(app_client.get("/v1/presets/acme-mlp").json())
    assert fetched == Preset.model_validate(PLATFORM)
    _assert_error(app_client.get("/v1/presets/nope@3"), 404, "not_found", [])  # its address names nothing
    mlp_request["policy"] = {"preset": "acme-mlp@1"}
    done = _submit_and_wait(app_client, mlp_request)  # the worker resolves the published preset too
    assert done["state"] == "succeeded", done["error"]
    report = app_client.get(done["links"]["report"]).json()
    assert report["tensors"][0]["scheme"] == "orthogonal" and report["tensors"][0]["rule"] == "preset:acme-mlp@1[0]"


def test_bad_presets_are_422(app_client: TestClient) -> None:
    for bad, loc in (({**PLATFORM, "name": "Bad Name"}, ["name"]), ({**PLATFORM, "rules": []}, ["rules"])):
        error = _assert_error(app_client.post("/v1/presets", json=bad), 422, "validation_error")
        assert error["loc"][: len(loc)] == loc


def test_sharded_output_in_hugging_face_layout(app_client: TestClient, tmp_path: Path) -> None:
    modules = [{"type": "linear", "name": f"l{i}", "in_features": 64, "out_features": 64} for i in range(5)]
    body = {"spec": {"name": "m", "modules": modules}, "policy": {"preset": "xavier"},
            "output": {"format": "sharded", "max_shard_bytes": 40_000}}  # fmt: skip
    done = _submit_and_wait(app_client, body)
    names = [f["name"] for f in done["files"]]
    assert names == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + ["model.safetensors.index.json"]
    index = app_client.get(f"{done['links']['self']}/files/model.safetensors.index.json").json()
    assert index["weight_map"]["l4.bias"] == "model-00003-of-00003.safetensors"
    assert index["metadata"]["total_size"] == 5 * (64 * 64 + 64) * 4
    _assert_error(app_client.get(done["links"]["weights"]), 409, "not_ready")
    _assert_error(app_client.get(f"{done['links']['self']}/files/..%2Fjob.json"), 404, "not_found")
    result = Client(http_client=app_client).initialize(body, path=tmp_path / "ckpt")
    assert result.path == tmp_path / "ckpt" / "model.safetensors.index.json"
    single = Client(http_client=app_client).initialize({**body, "output": {"format": "single"}})
    assert result.tensors.keys() == single.tensors.keys()
    assert all(torch.equal(result.tensors[k], single.tensors[k]) for k in single.tensors)


def test_an_unknown_preset_address_is_a_404_everywhere(app_client: TestClient, tmp_path: Path) -> None:
    """GET /v1/presets/{ref} answered 422 for a name nobody published (issue 16); the README says 404."""
    from initium.client import Client, NotFoundError

    _assert_error(app_client.get("/v1/presets/nobody"), 404, "not_found", [])
    with pytest.raises(NotFoundError):
        Client(http_client=app_client).preset("nobody")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        Client.local(tmp_path, device="cpu").preset("nobody")


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "m", "modules": [{"type": "parameter", "name": "__metadata__", "shape": [4]}]},
        {"name": "m", "tensors": [{"name": "__metadata__", "shape": [4]}]},
    ],
)
def test_a_tensor_named_like_the_safetensors_header_is_refused(app_client: TestClient, spec: dict[str, Any]) -> None:
    """A tensor named __metadata__ replaced the file's metadata and made it unloadable (issue 16)."""
    body = {"spec": spec, "policy": {"rules": [{"init": {"scheme": "zeros"}}]}}
    for path in ("/v1/plans", "/v1/initializations"):
        error = _assert_error(app_client.post(path, json=body), 422, "validation_error")
        assert "__metadata__" in error["message"] and "reserved" in error["message"]
