"""Shared fixtures: the DESIGN.md example request, an app with its real worker, a served process."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.cli import server_bounds
from initium.service.config import Settings

# The clients' download cache goes to a directory of this run's own, never the user's ~/.cache
# (subprocesses inherit it). Tests of the cache itself pass cache_dir explicitly.
os.environ["INITIUM_CACHE_DIR"] = tempfile.mkdtemp(prefix="initium-test-cache-")

# The smallest useful request, exactly as DESIGN.md section 3 gives it.
MLP_REQUEST: dict[str, Any] = {
    "spec": {
        "name": "mlp",
        "modules": [
            {"type": "linear", "name": "fc1", "in_features": 784, "out_features": 512},
            {"type": "relu"},
            {"type": "linear", "name": "fc2", "in_features": 512, "out_features": 10},
        ],
    },
    "policy": {
        "rules": [
            {
                "match": {"type": "linear", "role": "weight"},
                "init": {"scheme": "kaiming_normal", "nonlinearity": "relu"},
            },
            {"match": {"role": "bias"}, "init": {"scheme": "zeros"}},
        ]
    },
    "seed": 7,
    "dtype": "float32",
}


@pytest.fixture
def mlp_request() -> dict[str, Any]:
    return copy.deepcopy(MLP_REQUEST)


@pytest.fixture(scope="session")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The real app, in-process, with its real worker child process (session-wide: torch imports once)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), device="cpu", max_parameters=50_000_000)
    with TestClient(create_app(settings)) as client:
        _wait_ready(lambda: client.get("/readyz").status_code == 200)
        yield client


def wait_for_job(
    client: TestClient | httpx.Client, job_id: str, timeout: float = 60.0, report: bool = True
) -> dict[str, Any]:
    """The job's status once it finished; with `report`, once a success's report is no longer
    pending either (the worker computes it after publishing the weights: issue 17)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v1/initializations/{job_id}").json()
        pending = report and status["state"] == "succeeded" and status["report_state"] == "pending"
        if status["state"] in ("succeeded", "failed") and not pending:
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def _wait_ready(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, settings: Settings) -> Iterator[int]:
    """`app` served by a real uvicorn in this process, with `initium serve`'s bounds for `settings`
    (cli.server_bounds); yields its loopback port, stops it after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", **server_bounds(settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


SERVE_LOGS: list[Path] = []  # where the served process writes its log (for the log test)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`initium serve` as a user runs it, in a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    data_dir = tmp_path_factory.mktemp("served")
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115
    SERVE_LOGS.append(data_dir / "serve.log")
    env = {**os.environ, "INITIUM_DEVICE": "cpu"}
    initium = Path(sys.executable).parent / "initium"
    cmd = [str(initium), "serve", "--port", str(port), "--data-dir", str(data_dir / "store")]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


# redis-server for the scaled-out tests (the topology, job records in Redis). `make test` installs it
# (Debian); without it those tests skip, unless INITIUM_REQUIRE_REDIS is set (as the Makefile does),
# where a missing server is a failure.
REDIS = shutil.which("redis-server")
if REDIS is None and os.environ.get("INITIUM_REQUIRE_REDIS"):
    raise RuntimeError("INITIUM_REQUIRE_REDIS is set but redis-server is not installed (apt-get install redis-server)")
needs_redis = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed (make test installs it)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server on a free loopback port for the session; yields its URL (no database: tests
    pick theirs, /0 to /15, or a key prefix of their own)."""
    port = free_port()
    root = tmp_path_factory.mktemp("redis")
    assert REDIS is not None
    cmd = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API server for the session: moto's server mode in a subprocess on a free loopback
    port (started here, so `make test` starts nothing by hand); yields its URL. boto3 gets fake
    credentials and a region from the environment, as a deployment gives real ones."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        os.environ[name] = value
    os.environ.pop("AWS_PROFILE", None)
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(lambda: process.poll() is None and httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200, 30)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()
