"""Nobody waits behind someone else's huge job (issue 16, item 7): jobs are routed by planned bytes to
a lane, embedded (one worker per lane) and under Celery (one queue per lane)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.jobs.queue import LARGE_QUEUE, QUEUE, CeleryQueue, make_celery
from initium.service.jobs.records import open_records
from initium.service.jobs.store import LARGE, SMALL, JobStore, lane_for
from initium.service.pipeline.loop import Worker
from initium.service.plan.planner import make_plan
from tests.conftest import MLP_REQUEST, needs_redis

CPU = torch.device("cpu")
INITIUM = str(Path(sys.executable).parent / "initium")


def linears(n: int, width: int, seed: int = 0) -> dict[str, Any]:
    """n bias-free width x width linears with kaiming normal init: 4 * n * width**2 bytes."""
    modules = [{"type": "linear", "name": f"l{i}", "in_features": width, "out_features": width, "bias": False}
               for i in range(n)]  # fmt: skip
    rules = [{"match": {"role": "weight"}, "init": {"scheme": "kaiming_normal"}}]
    return {"spec": {"name": "m", "modules": modules}, "policy": {"rules": rules}, "seed": seed, "dtype": "float32"}


def create(store: JobStore, body: dict[str, Any]) -> str:
    request = InitRequest.model_validate(body)
    plan = make_plan(request)
    totals = plan.totals
    store.create(request, plan, Progress(tensors_done=0, tensors_total=totals.tensors, bytes_done=0,
                                         bytes_total=totals.bytes))  # fmt: skip
    return plan.request_id


def taken_in_order(worker: Worker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids `worker.run_pending` takes, in order, without running them."""
    taken: list[str] = []

    def take(job_id: str) -> None:
        taken.append(job_id)
        worker.store.dequeue(job_id)

    monkeypatch.setattr(worker, "_run_one", take)
    worker.run_pending()
    return taken


def test_jobs_are_queued_by_planned_bytes_and_each_lane_takes_its_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path, large_job_bytes=4 * 64 * 64)
    small = create(store, linears(1, 32))  # 4 KB
    large = create(store, linears(1, 64))  # 16 KB: at the threshold
    assert store.queued_ids(SMALL) == [small] and store.queued_ids(LARGE) == [large]
    assert (store.lane_of(small), store.lane_of(large)) == (SMALL, LARGE)
    assert store.queued_ids() == [small, large]  # every lane, oldest first (the Celery outbox)
    # The small lane never takes a large job; the large lane takes large ones first, then small ones.
    assert taken_in_order(Worker(store, CPU, lane=SMALL), monkeypatch) == [small]
    store.enqueue(small, SMALL)
    assert taken_in_order(Worker(store, CPU, lane=LARGE), monkeypatch) == [large, small]
    # A marker from before lanes existed (queue/<id>) is still taken, by the large lane.
    store.enqueue(small)
    assert store.queued_ids(SMALL) == [] and taken_in_order(Worker(store, CPU, lane=LARGE), monkeypatch) == [small]


def test_many_tiny_tensors_make_a_large_job_whatever_their_bytes(tmp_path: Path) -> None:
    # Round two of issue 16: 100,000 one-element tensors are 400 KB, but minutes of per-tensor statistics;
    # queued by bytes alone they held the small lane while small jobs waited behind them.
    store = JobStore(tmp_path, large_job_bytes=10**9, large_job_tensors=8)
    few, many = create(store, linears(7, 2, seed=1)), create(store, linears(8, 2, seed=2))
    assert (store.lane_of(few), store.lane_of(many)) == (SMALL, LARGE)
    assert lane_for(100, 10**9, 100_000, 1_000) == LARGE and lane_for(100, 10**9, 999, 1_000) == SMALL
    assert lane_for(100, None, 1, None) == LARGE  # no threshold: one lane, every job large
    assert Settings().large_job_tensors == 1_000


def test_a_job_claimed_by_another_worker_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job held by another worker (the other lane's, or an orphan's) is never run twice at once."""
    store = JobStore(tmp_path, large_job_bytes=1)
    first, second = create(store, linears(1, 8, seed=1)), create(store, linears(1, 8, seed=2))
    with store.claim(first) as mine:
        assert mine
        with store.claim(first) as again:  # a second open file description: what another process gets
            assert not again
        assert taken_in_order(Worker(store, CPU), monkeypatch) == [second]
    assert store.queued_ids() == [first]
    assert taken_in_order(Worker(store, CPU), monkeypatch) == [first]


def _first_not_queued(client: TestClient, job_id: str, timeout: float = 60.0) -> float:
    """Seconds until the job left the queue (running or done), polled every 10 ms."""
    started = time.monotonic()
    while client.get(f"/v1/initializations/{job_id}").json()["state"] == "queued":
        assert time.monotonic() - started < timeout, f"job {job_id} stayed queued"
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def lanes(tmp_path: Path) -> Iterator[TestClient]:
    """The API (submitting through HTTP) and the two embedded lanes' workers, as threads of this process."""
    settings = Settings(data_dir=tmp_path, embedded_worker=False, large_job_bytes=10_000_000, device="cpu")
    with TestClient(create_app(settings)) as client:
        store: JobStore = client.app.state.store  # type: ignore[attr-defined]
        workers = [Worker(store, CPU, poll_interval=0.02, lane=lane) for lane in (LARGE, SMALL)]
        threads = [threading.Thread(target=w.run, name=f"worker-{w.lane}") for w in workers]
        for thread in threads:
            thread.start()
        try:
            yield client
        finally:
            for worker in workers:
                worker.stop()
            for thread in threads:
                thread.join(60)


def test_a_small_job_does_not_wait_behind_a_large_one(lanes: TestClient) -> None:
    """Issue 16: a 0.17 s job waited 13 min behind a huge one. Here the large job takes seconds (67 MB on
    two cores) and the small job submitted while it runs starts within 2 s and finishes first."""
    large = lanes.post("/v1/initializations", json=linears(4, 2048, seed=int(time.time()))).json()["id"]
    _first_not_queued(lanes, large)
    small = lanes.post("/v1/initializations", json=MLP_REQUEST).json()["id"]
    assert _first_not_queued(lanes, small) < 2.0
    assert lanes.get(f"/v1/initializations/{large}").json()["state"] == "running"
    while (state := lanes.get(f"/v1/initializations/{small}").json()["state"]) in ("queued", "running"):
        time.sleep(0.02)
    assert state == "succeeded"
    assert lanes.get(f"/v1/initializations/{large}").json()["state"] == "running"  # the small one finished first


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@needs_redis
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_celery_routes_a_large_job_to_the_large_queue(tmp_path: Path, redis_server: str) -> None:
    """Two real workers, one per queue: the large job runs on the initium.large worker, the small one
    on the initium worker (each pool process is a child of its worker)."""
    url, data = f"{redis_server}/11", tmp_path / "data"
    env = {**os.environ, "INITIUM_BROKER_URL": url, "INITIUM_DEVICE": "cpu", "INITIUM_LARGE_JOB_BYTES": "1000000"}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for name, queues in (("small", QUEUE), ("large", LARGE_QUEUE)):
        cmd = [INITIUM, "worker", "--data-dir", str(data), "--name", f"{name}@lanes", "--queues", queues]
        with open(tmp_path / f"{name}.log", "wb") as log:
            workers[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        store = JobStore(data, open_records(url, data), large_job_bytes=1_000_000)
        queue = CeleryQueue(store, make_celery(url, 3600.0))
        ids = {"large": create(store, MLP_REQUEST), "small": create(store, linears(1, 8))}  # 1.6 MB, 256 bytes
        assert (store.lane_of(ids["large"]), store.lane_of(ids["small"])) == (LARGE, SMALL)
        queue.publish_outbox()
        for name, job_id in ids.items():
            deadline = time.monotonic() + 120
            while (record := store.records.load(job_id)).state in ("queued", "running"):
                assert time.monotonic() < deadline, f"{name} job never ran; logs in {tmp_path}"
                time.sleep(0.05)
            assert record.state == "succeeded" and record.worker is not None, record.error
            assert _parent(int(record.worker.rsplit(":", 1)[1])) == workers[name].pid, f"{name} ran elsewhere"
    finally:
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_compose_sizes_both_queues() -> None:
    """docker-compose.yml: GPU workers take large jobs (and small ones when free), and one worker takes
    small jobs alone; the API and every worker route with the same threshold."""
    import yaml  # type: ignore[import-untyped]

    from initium.client.cli import build_parser

    services = yaml.safe_load((Path(__file__).resolve().parents[3] / "docker-compose.yml").read_text())["services"]
    workers = {name: s for name, s in services.items() if s.get("command", [])[:2] == ["initium", "worker"]}
    queues = {name: build_parser().parse_args(s["command"][1:]).queues for name, s in workers.items()}
    assert any(q == (QUEUE,) for q in queues.values()), queues  # small jobs never wait behind large ones
    gpu = [name for name, s in workers.items() if "deploy" in s]
    assert gpu and all(LARGE_QUEUE in queues[name] for name in gpu)
    thresholds = {s["environment"]["INITIUM_LARGE_JOB_BYTES"] for s in [services["api"], *workers.values()]}
    assert len(thresholds) == 1 and Settings(large_job_bytes=thresholds.pop()).large_job_bytes == 1_000_000_000
    tensors = {s["environment"]["INITIUM_LARGE_JOB_TENSORS"] for s in [services["api"], *workers.values()]}
    assert len(tensors) == 1 and Settings(large_job_tensors=tensors.pop()).large_job_tensors == 1_000
