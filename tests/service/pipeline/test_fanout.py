"""Fan-out without a broker: the coordinator, parts and finalizer run in this process, in any order,
duplicated, and must give the bytes of one worker running the job alone (see [Note: fan-out])."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.jobs.store import JobStore
from initium.service.pipeline import fanout
from initium.service.pipeline.loop import MAX_ATTEMPTS, run_one
from initium.service.plan.planner import make_plan

CPU = torch.device("cpu")


def request(output: dict[str, Any] | None = None) -> dict[str, Any]:
    modules: list[dict[str, Any]] = [{"type": "embedding", "name": "emb", "num_embeddings": 300, "embedding_dim": 64}]
    for i in range(4):
        modules += [{"type": "linear", "name": f"fc{i}", "in_features": 64, "out_features": 64}, {"type": "gelu"}]
    body: dict[str, Any] = {
        "spec": {"name": "fan", "modules": modules},
        "policy": {"preset": "xavier@1", "lsuv": {}},
        "seed": 5,
        "dtype": "bfloat16",
    }
    if output:
        body["output"] = output
    return body


def create(store: JobStore, body: dict[str, Any]) -> str:
    req = InitRequest.model_validate(body)
    plan = make_plan(req)
    job_id = plan.request_id
    store.create(req, plan, Progress(tensors_done=0, tensors_total=9, bytes_done=0, bytes_total=0))
    return job_id


def alone(tmp: Path, body: dict[str, Any]) -> dict[str, str]:
    store = JobStore(tmp / "alone")
    job_id = create(store, body)
    run_one(store, job_id, CPU)
    return {f.name: f.sha256 for f in store.records.load(job_id).files}


def fanned_out(tmp: Path, body: dict[str, Any], shuffle: int | None, duplicate: bool = False) -> JobStore:
    """Run the job through fan-out; queued tasks run in a shuffled order, optionally each twice."""
    store = JobStore(tmp / "fanned")
    job_id = create(store, body)
    queue: list[tuple[str, list[Any]]] = []

    def publish(name: str, args: list[Any]) -> None:
        queue.extend([(name, args)] * (2 if duplicate else 1))

    run_one(store, job_id, CPU, lambda s, j, d: fanout.coordinate(s, j, d, 20_000, publish))
    rng = random.Random(shuffle)
    while queue:
        if shuffle is not None:
            rng.shuffle(queue)
        name, args = queue.pop()
        if name == fanout.RUN_PART:
            fanout.run_part(store, *args, CPU, 20_000, publish)
        else:
            fanout.finalize(store, *args, CPU, 20_000)
    return store


@pytest.mark.parametrize("output", [None, {"format": "sharded", "max_shard_bytes": 20_000}], ids=["single", "sharded"])
@pytest.mark.parametrize("shuffle", [None, 1, 2])
def test_parts_in_any_order_give_one_workers_bytes(tmp_path: Path, output: dict[str, Any] | None, shuffle: int) -> None:
    body = request(output)
    store = fanned_out(tmp_path, body, shuffle)
    (record,) = list(store.records.records())
    assert record.state == "succeeded", record.error
    assert {f.name: f.sha256 for f in record.files} == alone(tmp_path, body)
    assert record.progress.tensors_done == record.progress.tensors_total
    assert not (store.job_dir(record.id) / "parts").exists()


def test_duplicated_tasks_change_nothing(tmp_path: Path) -> None:
    """Redelivery can run a part or the finalizer twice; the second finds its work done."""
    body = request()
    store = fanned_out(tmp_path, body, shuffle=3, duplicate=True)
    (record,) = list(store.records.records())
    assert record.state == "succeeded" and {f.name: f.sha256 for f in record.files} == alone(tmp_path, body)


def test_split_keeps_file_order_and_budget() -> None:
    plan = make_plan(InitRequest.model_validate(request()))
    parts = fanout.split(plan, InitRequest.model_validate(request()), 20_000)
    assert [n for p in parts for n in p.tensors] == plan.shards[0].tensors
    assert all(p.bytes <= 20_000 or len(p.tensors) == 1 for p in parts) and len(parts) > 2


def test_a_part_that_keeps_killing_its_worker_fails_the_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    job_id = create(store, request())
    published: list[Any] = []
    run_one(store, job_id, CPU, lambda s, j, d: fanout.coordinate(s, j, d, 20_000, lambda n, a: published.append(a)))
    for _ in range(MAX_ATTEMPTS):  # the part's earlier starts, each of which killed its worker
        store.records.count_part_attempt(job_id, 0)
    fanout.run_part(store, job_id, 0, CPU, 20_000, lambda n, a: None)
    record = store.records.load(job_id)
    assert record.state == "failed" and record.error is not None
    assert "part 1 of" in record.error.message and "stopped its worker" in record.error.message
