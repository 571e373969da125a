"""Requests (what the issue sent), job helpers and the table cells' formatting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

ZEROS = {"rules": [{"init": {"scheme": "zeros"}}]}


def wide(layers: int, seed: int = 0) -> dict[str, Any]:
    """`layers` x Linear(4096, 4096) without bias, float32 normals: 67 MB a layer, a job of seconds on a CPU."""
    modules = [{"type": "linear", "name": f"l{i}", "in_features": 4096, "out_features": 4096, "bias": False}
               for i in range(layers)]  # fmt: skip
    return {"spec": {"name": "wide", "modules": modules},
            "policy": {"rules": [{"init": {"scheme": "normal", "std": 0.02}}]}, "seed": seed}  # fmt: skip


def header_bomb() -> dict[str, Any]:
    """Item 1's 10 KB request: 58 nested sequentials named with 128 characters around a repeat of
    10,000 Linear(1, 1): 20,000 tensors with 7.5 KB names, a 151 MB safetensors header."""
    inner: dict[str, Any] = {"type": "repeat", "name": "r", "count": 10_000,
                             "block": {"type": "linear", "in_features": 1, "out_features": 1}}  # fmt: skip
    for depth in range(58):
        inner = {"type": "sequential", "name": f"s{depth:03d}" + "s" * 124, "modules": [inner]}
    return {"spec": {"name": "header", "modules": [inner]}, "policy": ZEROS}


def tiny_tensors(blocks: int, bias: bool = True) -> dict[str, Any]:
    """Item 8's 250-byte request: a repeat of `blocks` x 10 Linear(1, 1): 20 (or 10 without bias)
    tensors a block, 200,000 at 10,000 blocks."""
    linear = {"type": "linear", "in_features": 1, "out_features": 1, "bias": bias}
    block = {"type": "repeat", "count": 10, "block": linear}
    return {"spec": {"name": "many", "modules": [{"type": "repeat", "name": "a", "count": blocks, "block": block}]},
            "policy": ZEROS}  # fmt: skip


def submit(url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/initializations", json=body, timeout=300)
    if response.status_code not in (200, 202):
        raise RuntimeError(f"submit answered {response.status_code}: {response.text[:200]}")
    job: dict[str, Any] = response.json()
    return job


def status(url: str, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = httpx.get(f"{url}/v1/initializations/{job_id}", timeout=30).json()
    return job


def wait_job(url: str, job_id: str, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    """Poll the job's status every 50 ms until done(status); TimeoutError with its last state."""
    deadline = time.monotonic() + timeout
    while True:
        job = status(url, job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job still {job.get('state')} (attempts {job.get('attempts')}) after {timeout:.0f} s")
        time.sleep(0.05)


def terminal(job: dict[str, Any]) -> bool:
    return job.get("state") in ("succeeded", "failed")


def finished(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    job = submit(url, body)
    return wait_job(url, job["id"], terminal, timeout)


def capped_post(url: str, body: dict[str, Any], cap: int, timeout: float) -> tuple[int, int, float, bool]:
    """POST and read the answer up to `cap` bytes: (status, bytes read, seconds, whether it is offered as a
    download: Content-Disposition attachment); bytes > cap means it went on, status 0 that nothing came
    for `timeout` seconds."""
    started = time.perf_counter()
    read, code, download = 0, 0, False
    try:
        with httpx.stream("POST", url, json=body, timeout=timeout) as response:
            code = response.status_code
            download = response.headers.get("content-disposition", "").startswith("attachment")
            for chunk in response.iter_bytes():
                read += len(chunk)
                if read > cap:
                    break
    except httpx.TimeoutException:
        pass
    return code, read, time.perf_counter() - started, download


def short(text: str, limit: int = 90) -> str:
    """One table cell: no pipes or newlines, at most `limit` characters."""
    flat = " ".join(text.replace("|", "/").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"
