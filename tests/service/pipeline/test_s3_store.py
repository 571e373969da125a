"""Jobs with the S3 artifact store, against a real S3 API server (moto's, from the s3_endpoint fixture):
the DESIGN example through the app and the worker's loop gives the golden bytes, served with Range
from S3; a fanned-out job assembles its parts in S3 into one worker's bytes; a store that is down
answers 503 and makes the API not ready, without failing any job."""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from fastapi.testclient import TestClient

from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.errors import StoreUnavailableError
from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.jobs.supervisor import WorkerSupervisor
from initium.service.pipeline import fanout
from initium.service.pipeline.loop import Worker, run_one
from initium.service.write.s3 import MIN_PART, S3Artifacts
from tests.conftest import free_port, wait_for_job
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
    assert len(started) == 2  # one worker per lane (issue 16)
    for cmd in started:
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


def _job_and_report(client: TestClient, body: dict[str, Any], request_id: str) -> tuple[dict[str, Any], Any]:
    """A succeeded job's status, and its report readdressed to `request_id` (to post for the record)."""
    done = _run(client, body)
    report = client.get(done["links"]["report"]).json()
    report["provenance"]["request_id"] = request_id
    return done, report


def test_a_report_for_the_record_is_kept_in_s3(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any]
) -> None:
    client, s3 = s3_app
    _, report = _job_and_report(client, mlp_request, "e" * 64)
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


# A store that is down: refused, timing out, throttling, a 5xx or its bucket gone. The API answers
# 503 store_unavailable with Retry-After (the client retries it as any 5xx) and readiness names the
# artifacts; nothing of a succeeded job is invalidated; a missing object stays artifact_corrupt.


@contextlib.contextmanager
def _app_on(data_dir: Path, store: str, endpoint: str) -> Iterator[TestClient]:
    """A second app over the same job records, with its artifacts at `store` on `endpoint`."""
    settings = Settings(data_dir=data_dir, device="cpu", artifact_store=store, s3_endpoint_url=endpoint,
                        embedded_worker=False)  # fmt: skip
    with TestClient(create_app(settings)) as client:
        yield client


def _unavailable(answer: Any, reason: str) -> dict[str, Any]:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    error: dict[str, Any] = answer.json()["error"]
    assert error["type"] == "store_unavailable" and error["loc"] == [] and reason in error["message"]
    return error


def test_a_store_that_is_down_answers_503_and_readiness_names_it(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any]
) -> None:
    client, s3 = s3_app
    done, report = _job_and_report(client, mlp_request, "d" * 64)
    data_dir = client.app.state.settings.data_dir  # type: ignore[attr-defined]
    started = time.monotonic()
    # Nothing listens on the port: the app still starts (readiness reports it), and fails fast.
    with _app_on(data_dir, f"s3://{s3.bucket}/deploy", f"http://127.0.0.1:{free_port()}") as down:
        for link in ("weights", "report", "report_html"):
            error = _unavailable(down.get(done["links"][link]), "EndpointConnectionError")
            assert f"s3://{s3.bucket}/deploy/" in error["message"] and "INITIUM_S3_ENDPOINT_URL" in error["message"]
        _unavailable(down.post("/v1/reports", json=report), "EndpointConnectionError")
        _unavailable(down.get(f"/v1/reports/{'d' * 64}"), "EndpointConnectionError")
        ready = down.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        assert ready.json()["artifacts"] == "down (EndpointConnectionError)" and ready.json()["store"] == "ok"
        assert down.get("/healthz").json() == {"status": "ok"}  # liveness does not depend on the store
    assert time.monotonic() - started < 8
    assert client.get(done["links"]["self"]).json()["state"] == "succeeded"  # a down store corrupts nothing
    assert client.get("/readyz").json()["artifacts"] == "ok"


def test_a_deleted_bucket_is_a_down_store_not_a_corrupt_job(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any], s3_endpoint: str
) -> None:
    client, _ = s3_app
    done = _run(client, mlp_request)
    gone = f"gone-{uuid.uuid4().hex[:12]}"
    with _app_on(client.app.state.settings.data_dir, f"s3://{gone}", s3_endpoint) as app:  # type: ignore[attr-defined]
        S3Artifacts(gone, endpoint_url=s3_endpoint).client.delete_bucket(Bucket=gone)  # made by the app's start
        assert app.get("/readyz").json()["artifacts"] == "down (NoSuchBucket)"
        error = _unavailable(app.get(done["links"]["weights"]), "NoSuchBucket")
        assert "INITIUM_ARTIFACT_STORE" in error["message"]
        _unavailable(app.get(done["links"]["report"]), "NoSuchBucket")
    assert client.get(done["links"]["self"]).json()["state"] == "succeeded"


def test_a_missing_object_of_a_succeeded_job_is_still_corrupt(
    s3_app: tuple[TestClient, S3Artifacts], mlp_request: dict[str, Any]
) -> None:
    client, s3 = s3_app
    done = _run(client, {**mlp_request, "seed": 8})  # a job of this test's own: it ends failed
    s3.delete(done["id"], [WEIGHTS])
    corrupt = client.get(done["links"]["weights"])
    assert corrupt.status_code == 500 and corrupt.json()["error"]["type"] == "artifact_corrupt"
    assert client.get(done["links"]["self"]).json()["state"] == "failed"


def test_what_counts_as_a_down_store(s3_endpoint: str) -> None:
    s3 = S3Artifacts(f"t-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint)

    def raised(exc: Exception) -> Exception:
        try:
            with s3.available():
                raise exc
        except Exception as caught:
            return caught
        raise AssertionError("nothing raised")

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    for exc, reason in [
        (client_error("SlowDown", 503), "SlowDown"),
        (client_error("InternalError", 500), "InternalError"),
        (client_error("BadGateway", 502), "BadGateway"),
        (ReadTimeoutError(endpoint_url=s3_endpoint), "ReadTimeoutError"),
        (ConnectTimeoutError(endpoint_url=s3_endpoint), "ConnectTimeoutError"),
    ]:
        down = raised(exc)
        assert isinstance(down, StoreUnavailableError) and down.reason == reason and down.status == 503
    for refusal in (client_error("AccessDenied", 403), client_error("NoSuchKey", 404)):
        assert raised(refusal) is refusal  # waiting does not cure these: they pass as they are
    with pytest.raises(StoreUnavailableError, match="NoSuchBucket"):
        s3.check()
    s3.ensure_bucket()
    s3.check()
    assert s3.stamp("a" * 64, WEIGHTS) is None  # a missing key in a bucket that answers
    with pytest.raises(FileNotFoundError):
        s3.get("a" * 64, WEIGHTS)


def test_a_worker_whose_store_is_down_fails_the_job_with_the_reason(
    tmp_path: Path, mlp_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # credentials of its own: alone, none were set
        monkeypatch.setenv(name, "testing")
    s3 = S3Artifacts("nowhere", endpoint_url=f"http://127.0.0.1:{free_port()}", serving=True)  # fails fast
    store = JobStore(tmp_path / "down", artifacts=s3)
    job_id = create(store, mlp_request)
    run_one(store, job_id, CPU)
    record = store.records.load(job_id)
    assert record.state == "failed" and record.error is not None
    assert record.error.type == "job_failed" and "is unavailable (EndpointConnectionError)" in record.error.message
    assert "EndpointConnectionError" in record.error.message


def test_the_local_store_checks_its_folder_for_readiness(tmp_path: Path) -> None:
    local = JobStore(tmp_path / "local").artifacts
    local.check()
    shutil.rmtree(tmp_path / "local" / "jobs")
    with pytest.raises(StoreUnavailableError, match="INITIUM_DATA_DIR") as down:
        local.check()
    assert down.value.reason == "missing"
