"""Issue 16 item 8: planning is bounded (tensors, names, time) before it costs anything, a large plan
is streamed as a download, and /healthz answers while a large plan is computed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from initium.schemas import InitRequest
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.errors import LimitExceededError
from initium.service.plan.limits import Limits
from initium.service.plan.output import plan_json_chunks
from initium.service.plan.planner import make_plan

ZEROS = {"rules": [{"init": {"scheme": "zeros"}}]}


def _tiny_linears(count: int) -> dict[str, Any]:
    """`count` one-by-one linears (2 tensors each) in a few hundred bytes: repeats of repeats."""
    inner = {
        "type": "repeat",
        "count": min(count, 10_000),
        "block": {"type": "linear", "in_features": 1, "out_features": 1},
    }
    spec = {"name": "t", "modules": [{"type": "repeat", "count": max(count // 10_000, 1), "block": inner}]}
    return {"spec": spec, "policy": ZEROS, "seed": 1}


@pytest.fixture
def api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    settings = Settings(data_dir=tmp_path, embedded_worker=False, **overrides)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/plans", "/v1/initializations"])
def test_a_300_byte_request_for_200000_tensors_is_refused_at_once(api: TestClient, path: str) -> None:
    body = json.dumps(_tiny_linears(100_000))
    assert len(body) < 300
    started = time.perf_counter()
    response = api.post(path, content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - started
    assert response.status_code == 413, response.text
    message = response.json()["error"]["message"]
    assert "200,000 tensors" in message and "at most 100,000 (INITIUM_MAX_TENSORS)" in message
    assert elapsed < 0.5


@pytest.mark.parametrize("api", [{"max_plan_seconds": 0.01}], indirect=True)
def test_planning_past_its_deadline_is_refused(api: TestClient) -> None:
    response = api.post("/v1/plans", json=_tiny_linears(5_000))
    assert response.status_code == 413, response.text
    assert "INITIUM_MAX_PLAN_SECONDS" in response.json()["error"]["message"]
    assert api.post("/v1/plans", json=_tiny_linears(5)).status_code == 200  # a small one still plans


@pytest.mark.parametrize("api", [{"max_plan_inline_bytes": 20_000}], indirect=True)
def test_a_large_plan_is_a_streamed_download_with_the_same_json(api: TestClient) -> None:
    request = _tiny_linears(200)
    expected = make_plan(InitRequest.model_validate(request))
    response = api.post("/v1/plans", json=request)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="plan-{expected.request_id}.json"'
    assert "content-length" not in response.headers  # streamed, never held whole
    assert response.content == expected.model_dump_json().encode()
    small = api.post("/v1/plans", json=_tiny_linears(5))
    assert "content-disposition" not in small.headers and int(small.headers["content-length"]) == len(small.content)
    # the client reads both shapes (TestClient is an httpx.Client that mypy sees through starlette's stubs)
    with Client("http://testserver", http_client=cast(httpx.Client, api)) as client:
        assert client.plan(request) == expected
        assert client.plan(_tiny_linears(5)) == make_plan(InitRequest.model_validate(_tiny_linears(5)))


def test_plan_chunks_are_the_plan_json(mlp_request: dict[str, Any]) -> None:
    # every list of the plan non-empty: shards, unused rules, uncovered, warnings
    mlp_request["policy"]["rules"].append({"match": {"name": "nothing.*"}, "init": {"scheme": "zeros"}})
    mlp_request["policy"]["rules"].pop(1)  # biases uncovered
    mlp_request["output"] = {"format": "sharded", "max_shard_bytes": 4096}
    plan = make_plan(InitRequest.model_validate(mlp_request))
    assert plan.unused_rules and plan.uncovered and plan.warnings and len(plan.shards) > 1
    assert b"".join(plan_json_chunks(plan)) == plan.model_dump_json().encode()


def test_healthz_answers_while_a_large_plan_is_computed(api: TestClient) -> None:
    latencies: list[float] = []
    done = threading.Event()

    def plan() -> None:
        # large plans, back to back for at least 1.5 s: a fast machine plans one in well under that
        until = time.perf_counter() + 1.5
        try:
            while True:
                assert api.post("/v1/plans", json=_tiny_linears(12_000)).status_code == 200
                if time.perf_counter() > until:
                    break
        finally:
            done.set()

    assert api.post("/v1/plans", json=_tiny_linears(5)).status_code == 200  # warm: first-call set-up is not the subject
    planner = threading.Thread(target=plan)
    planner.start()
    while not done.is_set():
        started = time.perf_counter()
        assert api.get("/healthz").status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.01)
    planner.join()
    latencies.sort()
    assert len(latencies) > 50  # the plan ran long enough to measure
    p99, worst = latencies[int(0.99 * len(latencies))], latencies[-1]
    assert p99 < 0.1, f"p99 {p99:.3f} s"
    # without the collector paused, one full collection stalled it 0.3-0.4 s at this size
    assert worst < 0.25, f"max {worst:.3f} s"


def test_a_manifest_is_counted_before_planning_too() -> None:
    tensors = [{"name": f"layer{i}.weight", "shape": [2, 2], "module_type": "linear"} for i in range(4)]
    request = InitRequest.model_validate({"spec": {"name": "m", "tensors": tensors}, "policy": ZEROS})
    with pytest.raises(LimitExceededError, match=r"4 tensors; this server allows at most 3 \(INITIUM_MAX_TENSORS\)"):
        make_plan(request, Limits(max_tensors=3))
    names = sum(len(t["name"]) for t in tensors)  # 4 x 13 bytes
    with pytest.raises(LimitExceededError, match=rf"{names} bytes of tensor names.*\(INITIUM_MAX_NAME_BYTES\)"):
        make_plan(request, Limits(max_name_bytes=names - 1))
    assert len(make_plan(request, Limits(max_tensors=4, max_name_bytes=names)).tensors) == 4
