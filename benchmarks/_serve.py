"""What the benchmark scripts share: a free loopback port, a service that is ready, the README's request."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 180.0) -> None:
    """Until GET /readyz answers 200 (the worker has warmed up its sampler by then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready after {timeout} s")


def readme_mlp(seed: int = 7) -> dict[str, Any]:
    """The README's MLP (784 -> 512 -> 10, kaiming_normal weights, zero biases)."""
    return {
        "spec": {"name": "mlp", "modules": [
            {"type": "linear", "name": "fc1", "in_features": 784, "out_features": 512}, {"type": "relu"},
            {"type": "linear", "name": "fc2", "in_features": 512, "out_features": 10}]},
        "policy": {"rules": [
            {"match": {"type": "linear", "role": "weight"},
             "init": {"scheme": "kaiming_normal", "nonlinearity": "relu"}},
            {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]},
        "seed": seed, "dtype": "float32",
    }  # fmt: skip


def ready_report(url: str, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
    """A succeeded job's report, waiting while the service computes it after the weights (409
    report_pending, issue 17); raises RuntimeError for any other answer or past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{url}/v1/initializations/{job_id}/report", timeout=60)
        if answer.status_code == 200:
            report: dict[str, Any] = answer.json()
            return report
        pending = answer.status_code == 409 and answer.json()["error"]["type"] == "report_pending"
        if not pending or time.monotonic() > deadline:
            raise RuntimeError(f"report of job {job_id}: {answer.status_code} {answer.text[:300]}")
        time.sleep(0.2)
