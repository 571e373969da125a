"""The job records' Redis going down and coming back (issue 16): 503 with Retry-After, never a 500.

A redis-server of this module's own, on a free loopback port, killed and restarted here (the
session's redis_server fixture must stay up for the other tests)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.errors import RecordsUnavailableError
from initium.service.jobs.queue import CeleryQueue
from initium.service.jobs.records_redis import RedisJobRecords
from tests.conftest import free_port, needs_redis

pytestmark = needs_redis


class Redis:
    """One redis-server that a test stops and starts again on the same port and folder."""

    def __init__(self, root: Path) -> None:
        self.port, self.root = free_port(), root
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        redis = shutil.which("redis-server")
        assert redis is not None
        cmd = [redis, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.root)]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)


@pytest.fixture
def redis_down_and_up(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def test_a_redis_that_is_down_raises_503_with_the_fix_and_no_credentials(redis_down_and_up: Redis) -> None:
    records = RedisJobRecords(f"redis://initium:s3cret@127.0.0.1:{redis_down_and_up.port}/0", prefix="down")
    redis_down_and_up.kill()
    calls: list[Any] = [
        lambda: records.exists("0" * 64),
        lambda: records.load("0" * 64),
        lambda: list(records.records()),
    ]
    for call in calls:
        with pytest.raises(RecordsUnavailableError) as raised:
            call()
        error = raised.value
        assert (error.status, error.retry_after_s, error.reason) == (503, 5, "ConnectionError")
        assert "INITIUM_BROKER_URL" in error.message and f"127.0.0.1:{redis_down_and_up.port}" in error.message
        assert "s3cret" not in error.message and "initium:" not in error.message


def test_the_first_calls_after_a_restart_succeed_and_readiness_never_raises(
    redis_down_and_up: Redis, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{redis_down_and_up.port}/0"
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=url, embedded_worker=False))
    queue = app.state.dispatcher
    assert isinstance(queue, CeleryQueue)
    queue.ping_timeout_s = 0.2
    records = app.state.store.records
    assert queue.readiness() == {"records": "volatile", "broker": "ok", "workers": 0}  # the pools now hold connections
    assert not records.exists("0" * 64)
    redis_down_and_up.kill()
    down = queue.readiness()
    assert down["records"] == "down (ConnectionError)" and str(down["broker"]).startswith("down (")
    redis_down_and_up.start()  # the pooled connections are now stale: each is retried once on a fresh one
    assert not records.exists("0" * 64)
    assert queue.readiness() == {"records": "volatile", "broker": "ok", "workers": 0}


def test_the_api_answers_503_and_readyz_names_the_records(
    redis_down_and_up: Redis, tmp_path: Path, mlp_request: dict[str, Any]
) -> None:
    url = f"redis://127.0.0.1:{redis_down_and_up.port}/0"
    app = create_app(Settings(data_dir=tmp_path / "data", broker_url=url, embedded_worker=False))
    app.state.dispatcher.ping_timeout_s = 0.2
    client = TestClient(app)  # no lifespan: nothing publishes in the background
    redis_down_and_up.kill()
    assert client.get(f"/v1/initializations/{'0' * 64}").status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert ready.json()["records"] == "down (ConnectionError)"
    answer = client.post("/v1/initializations", json=mlp_request)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json()["error"]["type"] == "records_unavailable", answer.text
    assert "INITIUM_BROKER_URL" in answer.json()["error"]["message"]
    assert client.get("/metrics").status_code == 200  # the scrape goes on, initium_worker_up 0
    # An API started while Redis is down starts (not ready), rather than failing at start.
    started = TestClient(create_app(Settings(data_dir=tmp_path / "data2", broker_url=url, embedded_worker=False)))
    assert started.get("/healthz").status_code == 200
    redis_down_and_up.start()
    assert client.post("/v1/initializations", json=mlp_request).status_code in (200, 201, 202)
    assert client.get("/readyz").json()["records"] == "volatile"
