"""Structured logs: JSON lines carrying the request id in the API and the job id in the worker."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient

from initium.service import logs


def test_json_lines_carry_the_ids() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("initium.worker", logging.INFO, __file__, 1, "job %s", ("succeeded",), None)
    token = logs.job_id.set("abc123")
    try:
        line = json.loads(formatter.format(record))
    finally:
        logs.job_id.reset(token)
    assert line["message"] == "job succeeded" and line["job_id"] == "abc123" and line["level"] == "info"
    assert "request_id" not in line and line["ts"].endswith("Z")


def test_every_response_carries_a_request_id(app_client: TestClient) -> None:
    fresh = app_client.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 32
    echoed = app_client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"


def test_the_serve_log_is_json(served: str) -> None:
    import httpx

    httpx.get(f"{served}/healthz", headers={"X-Request-ID": "from-test"})
    # The served fixture's log file: uvicorn's access lines and ours, one JSON object each.
    from tests.conftest import SERVE_LOGS

    lines = [json.loads(line) for line in SERVE_LOGS[0].read_text().splitlines() if line.startswith("{")]
    assert any(line["logger"] == "initium.api" and line.get("request_id") == "from-test" for line in lines)
    assert any(line["logger"] == "uvicorn.access" for line in lines)
    assert any(line["logger"] == "initium.worker" for line in lines)
