"""Crashes never lose or corrupt state (issue 16, items 3 and 6), with real processes:

- two workers racing on one job (an orphaned worker beside a new one): the job stays succeeded,
  the late attempt touches none of the published files, and the download is the recorded sha256;
- a Celery worker given a device its host lacks refuses to start, with the reason;
- a job a Celery worker took and could not run fails with the reason (never queued, attempts 0);
- a queued job whose message was lost is published again when its request is resubmitted.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.jobs.records import open_records
from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.jobs.submit import VerifiedFiles, weights_file
from initium.service.pipeline.loop import run_one
from initium.service.plan.planner import make_plan
from initium.service.write.artifacts import HASHED, sha256_of
from tests.conftest import MLP_REQUEST, _wait_ready, needs_redis, wait_for_job
from tests.service.pipeline.test_distributed import Topology

# A late attempt at a job in a process of its own (an orphaned worker): it writes the job's files,
# then stops before its first commit (touching `written`) until the file `go` exists.
LATE_ATTEMPT = """
import sys, time
from pathlib import Path
import torch
from initium.service.jobs.records import open_records
from initium.service.jobs.store import JobStore
from initium.service.pipeline.loop import run_one
from initium.service.write import artifacts

from initium.service import logs

logs.configure()
data, job_id, broker = Path(sys.argv[1]), sys.argv[2], sys.argv[3] or None
commit = artifacts.GuardedWriter.commit
def delayed(self):
    (data / "written").touch()
    while not (data / "go").exists():
        time.sleep(0.01)
    return commit(self)
artifacts.GuardedWriter.commit = delayed
run_one(JobStore(data, open_records(broker, data)), job_id, torch.device("cpu"))
"""


def _wait_for(path: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.02)


@pytest.mark.parametrize("records", ["files", pytest.param("redis", marks=needs_redis)])
def test_a_late_attempt_leaves_a_succeeded_job_and_its_files_as_they_are(
    records: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes run one job: the late one (attempt 1, an orphaned worker) has written everything
    when the other (attempt 2, this process: a restarted API's new worker) runs it to the end. The
    late one then commits nothing: the record, the weights, the report and the stamps stay as the
    winner left them, and the download is the recorded sha256."""
    broker = f"{request.getfixturevalue('redis_server')}/6" if records == "redis" else ""
    data = tmp_path / "data"
    store = JobStore(data, open_records(broker or None, data))
    body = InitRequest.model_validate({**MLP_REQUEST, "seed": uuid.uuid4().int % 10**6})
    plan = make_plan(body)
    job_id = plan.request_id
    store.create(body, plan, Progress(tensors_done=0, tensors_total=4, bytes_done=0, bytes_total=plan.totals.bytes))
    log = tmp_path / "late.log"
    with open(log, "wb") as out:  # the child keeps its own descriptor
        late = subprocess.Popen([sys.executable, "-c", LATE_ATTEMPT, str(data), job_id, broker], stderr=out)
    try:
        _wait_for(data / "written", late, log)
        run_one(store, job_id, torch.device("cpu"))
        won = store.records.load(job_id)
        assert (won.state, won.attempts) == ("succeeded", 2)
        published = {name: store.artifacts.stamp(job_id, name) for name in (WEIGHTS, "report.json", HASHED)}
        (data / "go").touch()  # the late attempt goes on
        assert late.wait(120) == 0, log.read_text()[-2000:]
    finally:
        late.kill()
        late.wait()
    assert "another attempt published this job first" in log.read_text()
    assert store.records.load(job_id) == won  # the record is untouched, not even restamped
    assert {name: store.artifacts.stamp(job_id, name) for name in published} == published  # nothing renamed over
    assert won.sha256 is not None and sha256_of(store.artifacts, job_id, WEIGHTS) == won.sha256
    assert weights_file(store, job_id, VerifiedFiles()).sha256 == won.sha256  # the download: 200, recorded sha
    assert not [p.name for p in store.job_dir(job_id).iterdir() if p.name.endswith(".partial")]
    if records == "redis":
        store.records.delete(job_id)


@needs_redis
def test_a_worker_without_its_device_refuses_to_start(
    redis_server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `initium worker --device cuda:0` runs (the CLI exits with its value) on a host without that
    device: it refuses before Celery starts, asking a probe process, never touching CUDA itself."""
    device = "cuda:99" if torch.cuda.is_available() else "cuda:0"  # a device this host does not have
    monkeypatch.setenv("INITIUM_BROKER_URL", f"{redis_server}/3")
    from initium.service.pipeline import celery_tasks

    monkeypatch.setattr(celery_tasks, "settings", Settings(device=device))
    monkeypatch.setattr(celery_tasks.app, "worker_main", lambda argv: pytest.fail("the worker started"))
    cuda_before = torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    assert celery_tasks.main("nodevice@test") == 3
    message = capsys.readouterr().err
    assert f"this host cannot use device '{device}' (INITIUM_DEVICE or --device)" in message, message
    assert torch.cuda.is_initialized() == cuda_before  # type: ignore[no-untyped-call]  # the probe ran elsewhere


@needs_redis
def test_a_job_a_worker_took_and_could_not_run_fails_with_the_reason(
    tmp_path: Path, redis_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """initium.run_job as the pool process runs it, with the job's records in Redis: its device
    failed at warm-up, so the job it took is failed with that reason, with one attempt."""
    monkeypatch.setenv("INITIUM_BROKER_URL", f"{redis_server}/4")
    monkeypatch.setenv("INITIUM_DATA_DIR", str(tmp_path))
    from initium.service.pipeline import celery_tasks

    celery_tasks._store.cache_clear()
    monkeypatch.setattr(celery_tasks, "settings", Settings())
    monkeypatch.setattr(celery_tasks, "_unusable", "its warm-up on cuda:0 failed: RuntimeError: no GPU")
    store = celery_tasks._store()
    request = InitRequest.model_validate({**MLP_REQUEST, "seed": uuid.uuid4().int % 10**6})
    plan = make_plan(request)
    store.create(request, plan, Progress(tensors_done=0, tensors_total=4, bytes_done=0, bytes_total=plan.totals.bytes))
    try:
        celery_tasks.run_job(plan.request_id)
        record = store.records.load(plan.request_id)
    finally:
        store.records.delete(plan.request_id)
        celery_tasks._store.cache_clear()
    assert (record.state, record.attempts) == ("failed", 1) and record.error is not None
    assert "could not run the job" in record.error.message and "warm-up on cuda:0 failed" in record.error.message


def _drop_messages(redis_url: str) -> int:
    """Lose every message waiting in the broker (its queues are Redis lists): a broker restarted
    without its data, or a worker that took them and died before its first attempt."""
    import redis

    client = redis.Redis.from_url(redis_url)
    lists = [key for key in client.scan_iter() if client.type(key) == b"list"]
    return int(client.delete(*lists)) if lists else 0


@needs_redis
def test_a_queued_job_whose_message_was_lost_runs_once_resubmitted(tmp_path: Path, redis_server: str) -> None:
    """The API (here in-process) accepts a job, the broker loses its message, a real worker process
    starts and sees nothing: the job stays queued with no attempt until its request is resubmitted
    past INITIUM_REPUBLISH_AFTER_S, which publishes it again; the worker then runs it."""
    topo = Topology(tmp_path, f"{redis_server}/5")
    settings = Settings(data_dir=topo.data, broker_url=topo.redis_url, republish_after_s=1.0, embedded_worker=False)
    body = {**MLP_REQUEST, "seed": 108}
    with TestClient(create_app(settings)) as client:
        try:
            job_id = client.post("/v1/initializations", json=body).json()["id"]
            assert _drop_messages(topo.redis_url) >= 1
            topo.start_worker("w")
            _wait_ready(lambda: client.get("/readyz").json().get("workers") == 1, timeout=120)
            time.sleep(1.0)  # the worker had its chance: nothing reached it
            status = client.get(f"/v1/initializations/{job_id}").json()
            assert (status["state"], status["attempts"]) == ("queued", 0)
            again = client.post("/v1/initializations", json=body)
            assert again.status_code == 202 and again.json()["id"] == job_id
            done = wait_for_job(client, job_id)
        finally:
            topo.stop()
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
