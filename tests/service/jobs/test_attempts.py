"""Attempts at a job (issue 16, items 4 and 6): each attempt shows its own progress; a job whose
attempts died MAX_ATTEMPTS times fails clearly and keeps nothing partial, in the local store and in
S3; a queued job nobody ever started is published again when resubmitted, at most once per period."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from initium.schemas import InitRequest
from initium.schemas.job import Progress
from initium.service.jobs.records import (
    FileJobRecords,
    JobRecords,
    release_attempt,
    republish_due,
    set_progress,
    start_attempt,
)
from initium.service.jobs.store import JobStore
from initium.service.pipeline.loop import MAX_ATTEMPTS, run_one
from initium.service.plan.planner import make_plan
from initium.service.write.artifacts import Artifacts, attempt_suffix
from initium.service.write.directory import LocalArtifacts
from initium.service.write.s3 import MIN_PART, S3Artifacts
from tests.conftest import MLP_REQUEST, needs_redis

CPU = torch.device("cpu")


@pytest.fixture(params=["files", pytest.param("redis", marks=needs_redis)])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobRecords]:
    if request.param == "files":
        yield FileJobRecords(tmp_path)
        return
    from initium.service.jobs.records_redis import RedisJobRecords

    url = request.getfixturevalue("redis_server")
    yield RedisJobRecords(f"{url}/9", prefix=f"attempts-{uuid.uuid4().hex[:8]}")


def _create(store: JobStore | JobRecords, seed: int = 7) -> str:
    request = InitRequest.model_validate({**MLP_REQUEST, "seed": seed})
    plan = make_plan(request)
    progress = Progress(tensors_done=0, tensors_total=len(plan.tensors), bytes_done=0, bytes_total=plan.totals.bytes)
    store.create(request, plan, progress)
    return plan.request_id


def test_a_new_attempt_shows_its_own_progress_from_zero(records: JobRecords) -> None:
    job_id = _create(records)
    first = start_attempt(records, job_id, "host:1", MAX_ATTEMPTS)
    total = first.progress
    set_progress(records, job_id, total.model_copy(update={"tensors_done": 3, "bytes_done": 1000}))
    second = start_attempt(records, job_id, "host:2", MAX_ATTEMPTS)  # the first worker died
    assert (second.state, second.attempts, second.worker) == ("running", 2, "host:2")
    assert (second.progress.tensors_done, second.progress.bytes_done) == (0, 0)
    assert (second.progress.tensors_total, second.progress.bytes_total) == (total.tensors_total, total.bytes_total)


def test_a_worker_stopping_on_purpose_releases_its_attempt_uncounted(records: JobRecords) -> None:
    # Round two of issue 16: three API restarts (each stopping its worker mid-job) failed a healthy job.
    job_id = _create(records)
    for _ in range(MAX_ATTEMPTS + 1):  # more stops than the cap allows crashes
        assert start_attempt(records, job_id, "host:1", MAX_ATTEMPTS).state == "running"
        released = release_attempt(records, job_id, "host:1")
        assert (released.state, released.attempts) == ("queued", 0)
    start_attempt(records, job_id, "host:2", MAX_ATTEMPTS)
    kept = release_attempt(records, job_id, "host:1")  # not its attempt any more: another worker runs it
    assert (kept.state, kept.attempts, kept.worker) == ("running", 1, "host:2")


def test_a_queued_job_never_started_is_due_for_publishing_once_per_period(records: JobRecords) -> None:
    job_id = _create(records)
    assert not republish_due(records, job_id, 600.0)  # just queued: its message is on its way
    assert republish_due(records, job_id, 1e-9)  # stale: published again, and the record stamped
    assert not republish_due(records, job_id, 600.0)  # the stamp holds off the next one
    start_attempt(records, job_id, "host:1", MAX_ATTEMPTS)
    assert not republish_due(records, job_id, 1e-9)  # a job some worker started is never re-published
    assert records.load(job_id).state == "running"


def _unfinished_write(store: JobStore, job_id: str, nbytes: int) -> None:
    """What a worker SIGKILLed while writing the weights leaves: its temporary file, or its
    multipart upload with the parts it sent (never completed nor aborted)."""
    name = "weights.safetensors"
    if isinstance(store.artifacts, LocalArtifacts):
        path = store.artifacts.path(job_id, name)
        path.with_name(f".{name}.{attempt_suffix()}").write_bytes(bytes(nbytes))
        return
    assert isinstance(store.artifacts, S3Artifacts)
    s3, key = store.artifacts, store.artifacts.key(job_id, name)
    upload = s3.client.create_multipart_upload(Bucket=s3.bucket, Key=key)["UploadId"]
    s3.client.upload_part(Bucket=s3.bucket, Key=key, UploadId=upload, PartNumber=1, Body=bytes(nbytes))


def _killed_attempts(store: JobStore, job_id: str, nbytes: int) -> None:
    """MAX_ATTEMPTS workers killed mid-write: a running record with one more attempt each time, an
    unfinished write of the weights and a fan-out part that no finalize assembled."""
    for attempt in range(MAX_ATTEMPTS):
        start_attempt(store.records, job_id, f"host:{attempt}", MAX_ATTEMPTS)
        _unfinished_write(store, job_id, nbytes)
        store.artifacts.put(job_id, f"parts/{attempt}.data", bytes(1000))


def _leftovers_local(artifacts: LocalArtifacts, job_id: str) -> int:
    folder = artifacts.jobs / job_id
    return sum(
        p.stat().st_size for p in folder.rglob("*") if p.is_file() and (".partial" in p.name or "parts" in p.parts)
    )


def _leftovers_s3(artifacts: S3Artifacts, job_id: str) -> int:
    """Bytes in unfinished uploads and fan-out parts of the job."""
    client, bucket = artifacts.client, artifacts.bucket
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=artifacts.key(job_id, "x")[:-1]).get("Uploads", [])
    sent = sum(
        int(part["Size"])
        for u in uploads
        for part in client.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
    )
    return int(sent) + 1000 * len([n for n in artifacts.names(job_id) if n.startswith("parts/")])


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_job_that_killed_its_worker_three_times_fails_clearly_and_keeps_nothing_partial(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    artifacts: Artifacts
    if backend == "local":
        artifacts = LocalArtifacts(tmp_path)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        artifacts = S3Artifacts(f"killed-{uuid.uuid4().hex[:12]}", endpoint_url=endpoint, part_size=MIN_PART)
        artifacts.ensure_bucket()
    store = JobStore(tmp_path, artifacts=artifacts)
    job_id = _create(store)
    _killed_attempts(store, job_id, 1 << 16)

    def leftovers() -> int:
        if isinstance(artifacts, LocalArtifacts):
            return _leftovers_local(artifacts, job_id)
        assert isinstance(artifacts, S3Artifacts)
        return _leftovers_s3(artifacts, job_id)

    assert leftovers() == MAX_ATTEMPTS * ((1 << 16) + 1000)  # what the three dead attempts left
    run_one(store, job_id, CPU)  # the fourth start: the transition that fails the job cleans up
    record = store.records.load(job_id)
    assert record.state == "failed" and record.attempts == MAX_ATTEMPTS and record.error is not None
    assert f"stopped {MAX_ATTEMPTS} times" in record.error.message
    assert leftovers() == 0
    assert not [n for n in artifacts.names(job_id) if n.startswith("parts/")]


def test_a_job_taken_and_not_run_fails_with_the_reason_and_keeps_nothing_partial(tmp_path: Path) -> None:
    """A job whose run raises before or around its work (a device error, say) is failed with the
    reason, never left queued or running, and takes what an earlier killed attempt left with it."""
    store = JobStore(tmp_path)
    job_id = _create(store, seed=8)
    start_attempt(store.records, job_id, "host:0", MAX_ATTEMPTS)  # an attempt that was killed...
    _unfinished_write(store, job_id, 4096)  # ...mid-write
    assert isinstance(store.artifacts, LocalArtifacts)
    assert _leftovers_local(store.artifacts, job_id) == 4096

    def broken(s: JobStore, j: str, d: torch.device) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    run_one(store, job_id, CPU, broken)
    record = store.records.load(job_id)
    assert (record.state, record.attempts) == ("failed", 2) and record.error is not None
    assert record.error.message == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert _leftovers_local(store.artifacts, job_id) == 0
