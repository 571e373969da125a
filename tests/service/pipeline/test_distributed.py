"""The scaled-out topology for real: redis-server, the API (`initium serve --broker`) and two
`initium worker` processes, with the faults a deployment meets: a worker killed mid-job, the API
restarted mid-job, a full disk. `make test` installs redis-server (Debian); without it these skip,
unless INITIUM_REQUIRE_REDIS is set (as the Makefile does), where a missing server is a failure.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.jobs.store import JobStore
from initium.service.pipeline.loop import run_one
from initium.service.plan.planner import make_plan
from tests.conftest import MLP_REQUEST, free_port, needs_redis, wait_for_job
from tests.service.pipeline.test_job import GOLDEN_SHA256

pytestmark = [pytest.mark.slow, needs_redis]
INITIUM = str(Path(sys.executable).parent / "initium")


def slow_request(seed: int) -> dict[str, Any]:
    """Six 2048x2048 orthogonal layers: a few seconds on two cores, long enough to interrupt."""
    modules: list[dict[str, Any]] = []
    for i in range(6):
        modules += [{"type": "linear", "name": f"l{i}", "in_features": 2048, "out_features": 2048}, {"type": "relu"}]
    return {
        "spec": {"name": "slow", "modules": modules[:-1]},
        "policy": {
            "rules": [
                {"match": {"role": "weight"}, "init": {"scheme": "orthogonal"}},
                {"match": {"role": "bias"}, "init": {"scheme": "zeros"}},
            ]
        },
        "seed": seed,
        "dtype": "float32",
    }


def run_alone(body: dict[str, Any], tmp: Path) -> dict[str, str]:
    """The same request run to completion by one worker in this process (no broker, no API):
    file name -> sha256."""
    store = JobStore(tmp)
    request = InitRequest.model_validate(body)
    plan = make_plan(request)
    job_id = plan.request_id
    store.create(request, plan, Progress(tensors_done=0, tensors_total=0, bytes_done=0, bytes_total=0))
    run_one(store, job_id, torch.device("cpu"))
    record = store.records.load(job_id)
    assert record.state == "succeeded", record.error
    return {f.name: f.sha256 for f in record.files}


def expected_sha256(body: dict[str, Any], tmp: Path) -> str:
    return run_alone(body, tmp)["weights.safetensors"]


class Topology:
    """redis-server, one API and named workers as real processes on loopback."""

    def __init__(self, root: Path, redis_url: str, env: dict[str, str] | None = None) -> None:
        self.root, self.redis_url, self.env = root, redis_url, env or {}
        self.data = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        env = {**os.environ, "INITIUM_BROKER_URL": self.redis_url, "INITIUM_DEVICE": "cpu", **self.env}
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, **kwargs)

    def start_api(self) -> None:
        cmd = [INITIUM, "serve", "--port", str(self.port), "--data-dir", str(self.data)]
        self.api = self._spawn("api", cmd)

    def start_worker(self, name: str, **kwargs: Any) -> None:
        cmd = [INITIUM, "worker", "--data-dir", str(self.data), "--name", f"{name}@test"]
        self.workers[name] = self._spawn(name, cmd, **kwargs)

    def wait_ready(self, workers: int, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/readyz", timeout=5).json()
                if body.get("status") == "ready" and body.get("workers") == workers:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"not ready with {workers} workers after {timeout} s: {body}; logs in {self.root}")

    def stop(self) -> None:
        for process in [*self.workers.values(), self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers.values(), self.api]:
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Topology]:
    topo = Topology(tmp_path_factory.mktemp("topology"), f"{redis_server}/0")
    topo.start_api()
    topo.start_worker("w1")
    topo.start_worker("w2")
    try:
        topo.wait_ready(workers=2)
        yield topo
    finally:
        topo.stop()


def submit(topo: Topology, body: dict[str, Any]) -> str:
    response = httpx.post(f"{topo.url}/v1/initializations", json=body, timeout=30)
    assert response.status_code in (200, 202), response.text
    job_id: str = response.json()["id"]
    return job_id


def wait_running(topo: Topology, job_id: str, tensors_done: int = 2, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = httpx.get(f"{topo.url}/v1/initializations/{job_id}", timeout=5).json()
        if status["state"] == "running" and status["progress"]["tensors_done"] >= tensors_done:
            return status
        assert status["state"] != "succeeded", "the job finished before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran")


def test_two_workers_give_the_embedded_bytes(topology: Topology) -> None:
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        status = wait_for_job(client, submit(topology, MLP_REQUEST))
        assert status["state"] == "succeeded" and status["sha256"] == GOLDEN_SHA256
        assert status["worker"] is not None
        weights = client.get(f"/v1/initializations/{status['id']}/weights")
    assert weights.status_code == 200 and weights.headers["etag"].strip('"') == GOLDEN_SHA256


def test_kill_9_a_worker_mid_job_completes_with_the_same_bytes(topology: Topology, tmp_path: Path) -> None:
    body = slow_request(seed=101)
    job_id = submit(topology, body)
    running = wait_running(topology, job_id)
    os.kill(int(running["worker"].rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process computing it
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        status = wait_for_job(client, job_id, timeout=120)
    assert status["state"] == "succeeded", status
    assert status["attempts"] == 2 and status["worker"] != running["worker"]
    assert status["sha256"] == expected_sha256(body, tmp_path)
    leftovers = sorted(p.name for p in (topology.data / "jobs" / job_id).iterdir())
    assert not [name for name in leftovers if name.endswith(".partial")], leftovers


def test_restarting_the_api_mid_job_loses_nothing(topology: Topology, tmp_path: Path) -> None:
    body = slow_request(seed=102)
    job_id = submit(topology, body)
    wait_running(topology, job_id, tensors_done=1)
    assert topology.api is not None
    topology.api.kill()
    topology.api.wait()
    topology.start_api()
    topology.wait_ready(workers=2)
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        status = wait_for_job(client, job_id, timeout=120)
    assert status["state"] == "succeeded" and status["attempts"] == 1
    assert status["sha256"] == expected_sha256(body, tmp_path)


def test_a_job_published_while_no_worker_runs_waits_for_one(topology: Topology) -> None:
    """Accepted jobs are durable in the broker: with both workers stopped (warm shutdown) a job
    stays queued and /readyz says not ready; a worker that comes back runs it."""
    for name in ("w1", "w2"):
        topology.workers[name].send_signal(signal.SIGTERM)
        topology.workers[name].wait(60)
    job_id = submit(topology, {**MLP_REQUEST, "seed": 103})
    time.sleep(1.0)
    assert httpx.get(f"{topology.url}/v1/initializations/{job_id}").json()["state"] == "queued"
    ready = httpx.get(f"{topology.url}/readyz")
    assert ready.status_code == 503 and ready.json()["workers"] == 0
    topology.start_worker("w1")
    topology.start_worker("w2")
    topology.wait_ready(workers=2)
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        assert wait_for_job(client, job_id)["state"] == "succeeded"


def _received(topology: Topology, worker: str, task: str) -> int:
    return (topology.root / f"{worker}.log").read_text().count(f"Task {task}[")


def test_a_sharded_job_fans_out_over_both_workers_with_one_workers_bytes(topology: Topology, tmp_path: Path) -> None:
    """One part task per shard, spread over the two workers, assembled with the index: every file
    equals what one worker alone writes."""
    body = {**slow_request(seed=105), "output": {"format": "sharded", "max_shard_bytes": 40_000_000}}
    before = {w: _received(topology, w, "initium.run_part") for w in ("w1", "w2")}
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        status = wait_for_job(client, submit(topology, body), timeout=120)
        assert status["state"] == "succeeded", status
        index = client.get(f"/v1/initializations/{status['id']}/files/model.safetensors.index.json").json()
    files = {f["name"]: f["sha256"] for f in status["files"]}
    assert len(files) == 4 and files == run_alone(body, tmp_path)  # 3 shards + the index
    assert set(index["weight_map"].values()) == {name for name in files if name.endswith(".safetensors")}
    parts = {w: _received(topology, w, "initium.run_part") - before[w] for w in ("w1", "w2")}
    assert sum(parts.values()) >= 3 and all(parts.values()), parts
    assert not (topology.data / "jobs" / status["id"] / "parts").exists()


def test_a_single_file_job_split_into_parts_gives_one_workers_bytes(tmp_path: Path, redis_server: str) -> None:
    """With a small part budget a single-file job runs as parts on two workers, and the assembled
    file (header + parts, hashed while copied) is byte for byte the one-worker file."""
    topo = Topology(tmp_path / "topo", f"{redis_server}/2", {"INITIUM_PART_BYTES": str(40_000_000)})
    topo.root.mkdir()
    topo.start_api()
    topo.start_worker("p1")
    topo.start_worker("p2")
    body = slow_request(seed=106)
    try:
        topo.wait_ready(workers=2)
        with httpx.Client(base_url=topo.url, timeout=30) as client:
            status = wait_for_job(client, submit(topo, body), timeout=120)
            report = client.get(f"/v1/initializations/{status['id']}/report").json()
    finally:
        topo.stop()
    assert status["state"] == "succeeded", status
    assert {f["name"]: f["sha256"] for f in status["files"]} == run_alone(body, tmp_path / "alone")
    assert status["progress"]["tensors_done"] == status["progress"]["tensors_total"] == 12
    assert [t["name"] for t in report["tensors"]] == [f"l{i}.{r}" for i in range(6) for r in ("weight", "bias")]
    assert _received(topo, "p1", "initium.run_part") and _received(topo, "p2", "initium.run_part")


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_metrics_count_durations_bytes_queue_and_cache_hits(topology: Topology) -> None:
    before = httpx.get(f"{topology.url}/metrics").text
    body = {**MLP_REQUEST, "seed": 107}
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        status = wait_for_job(client, submit(topology, body))
        assert client.post("/v1/initializations", json=body).status_code == 200  # a cache hit
        after = client.get("/metrics").text
    assert status["state"] == "succeeded"
    grew = {name: _metric(after, name) - _metric(before, name) for name in (
        'initium_job_duration_seconds_count{state="succeeded"}', "initium_bytes_generated_total",
        "initium_cache_hits_total")}  # fmt: skip
    assert grew == {
        'initium_job_duration_seconds_count{state="succeeded"}': 1.0,
        "initium_bytes_generated_total": float(status["size"]),
        "initium_cache_hits_total": 1.0,
    }
    assert _metric(after, "initium_queue_depth") == 0 and _metric(after, "initium_worker_up") == 1


def _small_disk() -> None:
    """In the worker's process: files may not grow past 1 MB, and the write fails with EFBIG
    instead of a signal, as a full disk fails it with ENOSPC."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_full_disk_fails_the_job_clearly_and_keeps_nothing_partial(tmp_path: Path, redis_server: str) -> None:
    topo = Topology(tmp_path, f"{redis_server}/1")  # its own queue: only the small-disk worker
    topo.start_api()
    topo.start_worker("small", preexec_fn=_small_disk)
    try:
        topo.wait_ready(workers=1)
        with httpx.Client(base_url=topo.url, timeout=30) as client:
            status = wait_for_job(client, submit(topo, slow_request(seed=104)), timeout=120)
    finally:
        topo.stop()
    assert status["state"] == "failed"
    message = status["error"]["message"]
    assert "File too large" in message and "free space" in message, message
    job_files = sorted(p.name for p in (topo.data / "jobs" / status["id"]).iterdir())
    assert job_files == [], job_files  # nothing partial (under Celery the job's records are in Redis)
