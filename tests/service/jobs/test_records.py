"""Job records, both backends: the state machine, atomic updates from several processes, the plan kept."""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from itertools import product
from pathlib import Path

import pytest

from initium.schemas import InitRequest
from initium.schemas.errors import ErrorInfo
from initium.schemas.job import FileInfo, JobRecord, JobState, Progress
from initium.service.errors import JobNotFoundError
from initium.service.jobs.records import (
    TRANSITIONS,
    FileJobRecords,
    JobRecords,
    add_progress,
    fail,
    set_progress,
    start_attempt,
    succeed,
)
from initium.service.jobs.records_redis import RedisJobRecords
from initium.service.plan.planner import make_plan
from tests.conftest import MLP_REQUEST, needs_redis

STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed")
PROGRESS = Progress(tensors_done=0, tensors_total=1000, bytes_done=0, bytes_total=3000)
FILES = [FileInfo(name="weights.safetensors", sha256="a" * 64, size=3000)]
OTHER_FILES = [FileInfo(name="weights.safetensors", sha256="b" * 64, size=3000)]
REQUEST = InitRequest.model_validate(MLP_REQUEST)
PLAN = make_plan(REQUEST)
Spec = tuple[str, str, str]  # ("file", data_dir, "") or ("redis", url, prefix): a backend a child process can open


def open_records(spec: Spec) -> JobRecords:
    kind, where, prefix = spec
    return FileJobRecords(Path(where)) if kind == "file" else RedisJobRecords(where, prefix)


@pytest.fixture(params=["file", pytest.param("redis", marks=needs_redis)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Spec:
    if request.param == "file":
        return ("file", str(tmp_path), "")
    url: str = request.getfixturevalue("redis_server")
    return ("redis", f"{url}/3", f"test-{uuid.uuid4().hex[:12]}")  # a prefix of its own: tests never meet


@pytest.fixture
def records(spec: Spec) -> JobRecords:
    return open_records(spec)


def new_job(records: JobRecords, n: int = 0) -> str:
    """A queued job under an id of its own (the plan of the DESIGN example, renamed)."""
    plan = PLAN.model_copy(update={"request_id": f"{n + 1:064x}"})
    record, created = records.create(REQUEST, plan, PROGRESS)
    assert created and record.state == "queued"
    return record.id


def job_in(records: JobRecords, state: JobState, n: int = 0) -> str:
    """A job brought to `state` the way workers do."""
    job_id = new_job(records, n)
    if state != "queued":
        assert start_attempt(records, job_id, "host:1", 3).state == "running"
    if state == "succeeded":
        assert succeed(records, job_id, FILES).state == "succeeded"
    elif state == "failed":
        assert fail(records, job_id, "boom").state == "failed"
    return job_id


@pytest.mark.parametrize(("before", "after"), list(product(STATES, STATES)))
def test_every_transition_is_allowed_or_refused_by_the_table(records: JobRecords, before: JobState,
                                                             after: JobState) -> None:  # fmt: skip
    job_id = job_in(records, before, n=STATES.index(before) * 4 + STATES.index(after))
    old = records.load(job_id)
    stored = records.update(job_id, lambda r: r.model_copy(update={"state": after, "worker": "other:2"}))
    expected = {("queued", "queued"), ("queued", "running"), ("queued", "failed"), ("running", "running"),
                ("running", "queued"), ("running", "succeeded"), ("running", "failed"), ("failed", "failed"),
                ("failed", "queued"), ("failed", "succeeded"), ("succeeded", "succeeded")}  # fmt: skip
    assert ((before, after) in expected) == (after in TRANSITIONS[before])
    if (before, after) in expected:
        assert stored.state == after and stored.worker == "other:2"
        assert stored.updated_at >= old.updated_at
    else:
        assert stored == old
    assert records.load(job_id) == stored


def test_a_success_never_changes_its_files_progress_or_state(records: JobRecords) -> None:
    job_id = job_in(records, "succeeded")
    done = records.load(job_id)
    assert done.sha256 == "a" * 64 and done.size == 3000 and done.files == FILES
    assert done.progress.tensors_done == 1000 and done.progress.bytes_done == 3000
    for change in (
        lambda r: r.model_copy(update={"sha256": "c" * 64}),
        lambda r: r.model_copy(update={"files": OTHER_FILES}),
        lambda r: r.model_copy(update={"size": 1}),
        lambda r: r.model_copy(update={"progress": PROGRESS}),
    ):
        assert records.update(job_id, change) == done
    assert succeed(records, job_id, OTHER_FILES) == done  # a duplicate attempt with other bytes
    assert succeed(records, job_id, FILES) == done  # the same success again: nothing to write


def test_a_success_after_a_duplicate_attempts_failure_counts(records: JobRecords) -> None:
    """The race the other way round: the attempt that fails finishes first; the one that writes the
    job's bytes still makes it a success, with the error cleared."""
    job_id = new_job(records)
    start_attempt(records, job_id, "slow:1", 3)
    start_attempt(records, job_id, "fast:2", 3)
    assert fail(records, job_id, "the fast attempt ran out of memory").state == "failed"
    done = succeed(records, job_id, FILES)
    assert done.state == "succeeded" and done.error is None and done.sha256 == FILES[-1].sha256
    assert done.files == FILES and done.progress.tensors_done == done.progress.tensors_total


def test_a_late_failing_attempt_after_a_success_leaves_it_untouched(
    records: JobRecords, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = new_job(records)
    assert start_attempt(records, job_id, "slow:1", 3).attempts == 1
    assert start_attempt(records, job_id, "fast:2", 3).attempts == 2  # redelivered while the first still runs
    done = succeed(records, job_id, FILES)
    with caplog.at_level(logging.INFO, logger="initium.jobs"):
        assert records.update(job_id, lambda r: r.model_copy(update={"state": "failed"})) == done
    assert "refused succeeded -> failed" in caplog.text
    assert fail(records, job_id, "the slow attempt's cleanup lost its files") == done
    assert set_progress(records, job_id, PROGRESS) == done
    assert add_progress(records, job_id, 5, 5) == done
    assert start_attempt(records, job_id, "late:3", 3) == done
    assert records.load(job_id) == done


def test_create_returns_an_existing_job_and_restarts_a_failed_one(records: JobRecords) -> None:
    for n, state in enumerate(("queued", "running", "succeeded")):
        job_id = job_in(records, state, n)  # type: ignore[arg-type]
        plan = PLAN.model_copy(update={"request_id": job_id})
        assert records.create(REQUEST, plan, PROGRESS) == (records.load(job_id), False)
    job_id = job_in(records, "running", 9)
    records.update(
        job_id, lambda r: r.model_copy(update={"progress": r.progress.model_copy(update={"tensors_done": 7})})
    )
    assert records.count_part_attempt(job_id, 0) == 1
    failed = fail(records, job_id, "boom")
    assert failed.error == ErrorInfo(type="job_failed", message="boom")
    fresh_progress = PROGRESS.model_copy(update={"tensors_total": 5})
    record, created = records.create(REQUEST, PLAN.model_copy(update={"request_id": job_id}), fresh_progress)
    assert created and record == records.load(job_id)
    assert (record.state, record.error, record.attempts, record.progress) == ("queued", None, 0, fresh_progress)
    assert record.created_at == failed.created_at
    assert records.count_part_attempt(job_id, 0) == 1  # a fresh start counts its parts afresh


def test_the_plan_and_request_round_trip_byte_equal(records: JobRecords) -> None:
    _, created = records.create(REQUEST, PLAN, PROGRESS)
    assert created
    assert records.load_plan(PLAN.request_id).model_dump_json() == PLAN.model_dump_json()
    assert records.load_request(PLAN.request_id).model_dump_json() == REQUEST.model_dump_json()
    assert records.exists(PLAN.request_id)


def test_start_attempt_fails_a_job_that_stopped_its_worker_too_often(records: JobRecords) -> None:
    job_id = new_job(records)
    for attempt in (1, 2):
        record = start_attempt(records, job_id, f"host:{attempt}", 2)
        assert (record.state, record.attempts, record.worker) == ("running", attempt, f"host:{attempt}")
    record = start_attempt(records, job_id, "host:3", 2)
    assert record.state == "failed" and record.attempts == 2
    assert record.error == ErrorInfo(
        type="job_failed",
        message="the worker stopped 2 times while running this job; it may need more memory than the worker has",
    )
    assert start_attempt(records, job_id, "host:4", 2) == record  # a finished job is left as it is


def test_fail_and_progress_touch_only_a_running_job(records: JobRecords) -> None:
    job_id = new_job(records)
    queued = records.load(job_id)
    assert fail(records, job_id, "a previous attempt") == queued  # resubmitted meanwhile: not failed by it
    assert set_progress(records, job_id, PROGRESS.model_copy(update={"tensors_done": 3})) == queued
    start_attempt(records, job_id, "host:1", 3)
    assert set_progress(records, job_id, PROGRESS.model_copy(update={"tensors_done": 3})).progress.tensors_done == 3
    capped = add_progress(records, job_id, 10_000, 10_000).progress
    assert (capped.tensors_done, capped.bytes_done) == (1000, 3000)  # never past the totals
    failed = fail(records, job_id, "out of disk", error_type="artifact_corrupt")
    assert failed.error == ErrorInfo(type="artifact_corrupt", message="out of disk")


def test_invalidate_is_the_one_exit_from_succeeded(records: JobRecords) -> None:
    error = ErrorInfo(type="artifact_corrupt", message="the stored weights no longer match their sha256")
    running = job_in(records, "running", 1)
    assert records.invalidate(running, error) == records.load(running)
    job_id = job_in(records, "succeeded")
    record = records.invalidate(job_id, error)
    assert (record.state, record.error) == ("failed", error)
    assert records.load(job_id) == record
    again, created = records.create(REQUEST, PLAN.model_copy(update={"request_id": job_id}), PROGRESS)
    assert created and again.state == "queued" and again.sha256 is None and again.files == []


def test_unknown_and_malformed_ids_are_not_found(records: JobRecords) -> None:
    with pytest.raises(JobNotFoundError, match=r"no job '\.\./x': ids are 64 lowercase hex digits"):
        records.load("../x")
    unknown = "f" * 64
    for call in (records.load, records.load_plan, records.load_request,
                 lambda i: records.update(i, lambda r: r), lambda i: records.count_part_attempt(i, 0)):  # fmt: skip
        with pytest.raises(JobNotFoundError, match=f"no job {unknown}; submit it with POST /v1/initializations"):
            call(unknown)
    assert not records.exists(unknown)


def test_records_lists_every_job_and_delete_forgets_one(records: JobRecords) -> None:
    ids = {job_in(records, state, n) for n, state in enumerate(STATES)}
    assert {r.id for r in records.records()} == ids
    gone = min(ids)
    records.delete(gone)
    assert not records.exists(gone)
    with pytest.raises(JobNotFoundError):
        records.load(gone)
    assert {r.id for r in records.records()} == ids - {gone}
    records.delete(gone)  # twice is harmless


def test_part_attempts_count_per_part(records: JobRecords) -> None:
    job_id = new_job(records)
    assert [records.count_part_attempt(job_id, k) for k in (0, 1, 0, 0)] == [1, 1, 2, 3]


def _add_many(spec: Spec, job_id: str, n: int) -> None:
    records = open_records(spec)
    for _ in range(n):
        add_progress(records, job_id, 1, 3)
        records.count_part_attempt(job_id, 7)


def test_concurrent_updates_from_several_processes_lose_nothing(records: JobRecords, spec: Spec) -> None:
    job_id = job_in(records, "running")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(spec, job_id, 50)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    progress = records.load(job_id).progress
    assert (progress.tensors_done, progress.bytes_done) == (200, 600)
    assert records.count_part_attempt(job_id, 7) == 201


def test_file_records_are_the_job_folders_files(tmp_path: Path) -> None:
    records = FileJobRecords(tmp_path)
    job_id = new_job(records)
    folder = tmp_path / "jobs" / job_id
    assert {p.name for p in folder.iterdir()} == {"request.json", "plan.json", "job.json", "job.lock"}
    assert JobRecord.model_validate_json((folder / "job.json").read_bytes()) == records.load(job_id)
    (folder / "weights.safetensors").write_bytes(b"x")  # an artifact: the artifact store's, not the records'
    records.delete(job_id)
    assert [p.name for p in folder.iterdir()] == ["weights.safetensors"]
