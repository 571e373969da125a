"""Jobs with the S3 artifact store, against a real S3 API server (moto's, from the s3_endpoint fixture):
the DESIGN example through the app and the worker's loop gives the golden bytes, served with Range
from S3; a fanned-out job assembles its parts in S3 into one worker's bytes."""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.jobs.supervisor import WorkerSupervisor
from initium.service.pipeline import fanout
from initium.service.pipeline.loop import Worker, run_one
from initium.service.write.s3 import MIN_PART, S3Artifacts
from tests.conftest import wait_for_job
from tests.service.pipeline.test_fanout import alone, create, request
from tests.service.pipeline.test_job import GOLDEN_SHA256

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def s3_app(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, S3Artifacts]]:
    """The app with its artifacts in S3; its jobs run in this process by the worker's own loop (a
    worker process would cost seconds to start; test_the_supervisor_hands_the_worker_the_store
    checks what it would be given)."""
    bucket = f"app-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("s3-app"), device="cpu", artifact_store=f"s3://{bucket}/deploy",
        s3_endpoint_url=s3_endpoint, embedded_worker=False,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client, S3Artifacts(bucket, "deploy", endpoint_url=s3_endpoint)


def _run(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    job_id = client.post("/v1/initializations", json=body).json()["id"]
    Worker(client.app.state.store, CPU).run_pending()  # type: ignore[attr-defined]
    return wait_for_job(client, job_id)


def test_the_supervisor_hands_the_worker_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda cmd, env: started.append(cmd) or SimpleNamespace(pid=0))
    settings = Settings(data_dir=tmp_path, artifact_store="s3://bucket/p", s3_endpoint_url="http://minio:9000")
    WorkerSupervisor(settings).start()
    (cmd,) = started
    assert cmd[cmd.index("--artifact-store") + 1] == "s3://bucket/p"
    assert cmd[cmd.index("--s3-endpoint-url") + 1] == "http://minio:9000"


def test_the_design_example_on_s3_gives_the_golden_bytes_and_ranges(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any]
) -> None:
    client, s3 = s3_app
    done = _run(client, mlp_request)
    assert done["state"] == "succeeded" and done["sha256"] == GOLDEN_SHA256, done["error"]
    job_id = done["id"]
    assert {"hashed.json", "report.json", WEIGHTS} <= set(s3.names(job_id))
    store: JobStore = client.app.state.store  # type: ignore[attr-defined]
    assert not store.artifact(job_id, WEIGHTS).exists()  # no bytes on the local volume
    whole = client.get(done["links"]["weights"])
    assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == GOLDEN_SHA256
    assert whole.headers["etag"] == f'"{GOLDEN_SHA256}"' and int(whole.headers["content-length"]) == done["size"]
    part = client.get(done["links"]["weights"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{done['size']}"
    resumed = client.get(done["links"]["weights"], headers={"Range": "bytes=1000-", "If-Range": f'"{GOLDEN_SHA256}"'})
    assert resumed.status_code == 206 and resumed.content == whole.content[1000:]
    tail = client.get(done["links"]["weights"], headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == whole.content[-16:]
    assert client.get(done["links"]["weights"], headers={"Range": f"bytes={done['size']}-"}).status_code == 416
    assert s3.usage(job_id).last_used is not None  # served: eviction sees the use
    report = client.get(done["links"]["report"]).json()
    assert report["artifact"]["sha256"] == GOLDEN_SHA256 and report["propagation"] is not None


def test_a_report_for_the_record_is_kept_in_s3(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any]
) -> None:
    client, s3 = s3_app
    done = _run(client, mlp_request)
    report = client.get(done["links"]["report"]).json()
    report["provenance"]["request_id"] = "e" * 64
    assert client.post("/v1/reports", json=report).status_code == 201
    assert s3.get_report("e" * 64) is not None
    assert client.get(f"/v1/reports/{'e' * 64}").json()["artifact"]["sha256"] == GOLDEN_SHA256


@pytest.mark.parametrize("output", [None, {"format": "sharded", "max_shard_bytes": 20_000}], ids=["single", "sharded"])
def test_a_fanned_out_job_on_s3_gives_one_workers_bytes(
    tmp_path: Path, s3_endpoint: str, output: dict[str, Any] | None
) -> None:
    s3 = S3Artifacts(f"fan-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint, part_size=MIN_PART)
    s3.ensure_bucket()
    store = JobStore(tmp_path / "s3", artifacts=s3)
    body = request(output)
    job_id = create(store, body)
    queue: list[tuple[str, list[Any]]] = []
    run_one(store, job_id, CPU, lambda s, j, d: fanout.coordinate(s, j, d, 20_000, lambda n, a: queue.append((n, a))))
    rng = random.Random(0)
    while queue:
        rng.shuffle(queue)
        name, args = queue.pop()
        if name == fanout.RUN_PART:
            fanout.run_part(store, *args, CPU, 20_000, lambda n, a: queue.append((n, a)))
        else:
            fanout.finalize(store, *args, CPU, 20_000)
    record = store.records.load(job_id)
    assert record.state == "succeeded", record.error
    assert {f.name: f.sha256 for f in record.files} == alone(tmp_path, body)
    for f in record.files:
        assert hashlib.sha256(s3.get(job_id, f.name)).hexdigest() == f.sha256
    assert not [n for n in s3.names(job_id) if n.startswith("parts/")]
    assert s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert store.evict(None, 1e-6, time.time() + 1) == [job_id]  # eviction empties the bucket's job too
    assert s3.names(job_id) == [] and not store.records.exists(job_id)
