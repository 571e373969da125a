"""Job records: the one place a job's state changes, an update under a lock checked by a state machine.

[Note: job records] A job is three records: the normalized request and the plan made at submit
(both written once: workers read the stored plan and never plan again) and the job record
(JobRecord: state, progress, attempts, error, sha256). The record changes only through
`JobRecords.update`, a read-modify-write under a lock (a file lock, or a Redis transaction) whose
result is checked against one table of transitions:

    queued    -> queued, running, failed
    running   -> running, queued, succeeded, failed
    failed    -> failed, queued, succeeded
    succeeded -> succeeded, with sha256, size, files and progress unchanged

A succeeded job's report has a state of its own (see [Note: weights first] in initium.schemas.job):
pending from the success until the worker stores it (ready) or gives up on it (failed, with the
reason); a failed report goes back to pending when the request is submitted again.

A change the table refuses leaves the record as it is (logged at INFO) and `update` returns the
stored record, so a duplicate or late attempt can never overwrite a success: its failure, its
progress or its own success with other bytes is dropped. The one exit from `succeeded` is
`invalidate`, used only when the API finds the stored bytes no longer match their sha256: the job
is then failed, so that resubmitting the request generates it again. failed -> succeeded is the
other race, the other way round: of two attempts at once (a redelivered job), the one that failed
may finish first; the other's success, the job's bytes whole and hashed, then still counts (the
error is cleared), rather than leaving a job failed whose weights are in place. The job's files
follow the same rule: an attempt commits nothing once the job has succeeded (see [Note: a success
stays] in pipeline.job), and the code that fails a job removes what its attempts left unfinished
(pipeline.job.discard_unfinished), since an attempt that died cannot. Each new attempt shows its
own progress, from 0 (start_attempt).

Two backends: FileJobRecords (files under the data directory, the local default) and
RedisJobRecords (initium.service.jobs.records_redis, under Celery: no shared volume needed).
The named transitions below (start_attempt, succeed, fail, ...) are what callers use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from initium.schemas.errors import ErrorInfo
from initium.schemas.job import FileInfo, JobRecord, JobState, Progress
from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.errors import JobNotFoundError
from initium.service.identity import JOB_ID, check_id
from initium.service.plan.output import plan_json_chunks
from initium.service.write.artifacts import atomic_write

log = logging.getLogger("initium.jobs")

Change = Callable[[JobRecord], JobRecord]
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    "queued": frozenset({"queued", "running", "failed"}),
    "running": frozenset({"running", "queued", "succeeded", "failed"}),
    "failed": frozenset({"failed", "queued", "succeeded"}),
    "succeeded": frozenset({"succeeded"}),
}
# What a success published; a second success (a duplicate attempt) must not change it.
FROZEN_WHEN_SUCCEEDED = ("sha256", "size", "files", "progress")


class JobRecords(Protocol):
    """The job records of one deployment; every change goes through `update` (see [Note: job records])."""

    def create(self, request: InitRequest, plan: Plan, progress: Progress) -> tuple[JobRecord, bool]:
        """Atomically: a new id (plan.request_id) stores the request, the plan and a queued record; a
        failed job gets a fresh start (queued, no error, 0 attempts, `progress`); both return
        created=True. Any other existing job is returned as it is, created=False."""
        ...

    def exists(self, job_id: str) -> bool: ...

    def load(self, job_id: str) -> JobRecord:
        """The record; JobNotFoundError for an unknown or malformed id."""
        ...

    def load_request(self, job_id: str) -> InitRequest: ...

    def load_plan(self, job_id: str) -> Plan:
        """The plan made at submit (workers, parts and the finalizer never plan again)."""
        ...

    def update(self, job_id: str, change: Change) -> JobRecord:
        """Apply `change` to the current record under the lock and store the result, stamped, if the
        state machine allows it; returns the stored record either way. `change` must be pure: a
        backend may call it again when another writer got in first."""
        ...

    def invalidate(self, job_id: str, error: ErrorInfo) -> JobRecord:
        """The one exit from `succeeded`: the stored bytes no longer match their sha256, so the job
        is failed with `error` and a resubmission generates it again. Other states are left as they are."""
        ...

    def count_part_attempt(self, job_id: str, k: int) -> int:
        """One more start of fan-out part k (brokers keep no redelivery count); the new count."""
        ...

    def records(self) -> Iterator[JobRecord]:
        """Every readable record (one being created or deleted right now may be skipped)."""
        ...

    def delete(self, job_id: str) -> None:
        """Forget the job's records (its artifacts are the artifact store's)."""
        ...


def open_records(broker_url: str | None, data_dir: Path) -> JobRecords:
    """The deployment's records: in Redis when the broker is Redis (Celery: no shared volume needed
    for them), else files under `data_dir` (the embedded worker, local mode)."""
    if broker_url is not None and broker_url.startswith(("redis://", "rediss://")):
        from initium.service.jobs.records_redis import RedisJobRecords  # only a deployment with Redis needs it

        return RedisJobRecords(broker_url)
    return FileJobRecords(data_dir)


def now() -> str:
    """A record's timestamp: UTC, ISO 8601, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id}; submit it with POST /v1/initializations", ("id",))


def allowed(current: JobRecord, proposed: JobRecord) -> bool:
    """Whether the state machine lets `current` become `proposed`."""
    if proposed.id != current.id or proposed.state not in TRANSITIONS[current.state]:
        return False
    return current.state != "succeeded" or all(
        getattr(current, name) == getattr(proposed, name) for name in FROZEN_WHEN_SUCCEEDED
    )


def apply(current: JobRecord, change: Change) -> JobRecord | None:
    """The record to store after `change`, stamped; None when there is nothing to write (no change,
    or a change the state machine refuses, which is logged)."""
    proposed = change(current)
    if proposed == current:
        return None
    if not allowed(current, proposed):
        log.info("job %s: refused %s -> %s (a late or duplicate attempt); kept the record as it is",
                 current.id, current.state, proposed.state)  # fmt: skip
        return None
    return proposed.model_copy(update={"updated_at": now()})


def fresh(job_id: str, progress: Progress) -> JobRecord:
    stamp = now()
    return JobRecord(id=job_id, state="queued", progress=progress, created_at=stamp, updated_at=stamp)


def restart(record: JobRecord, progress: Progress) -> JobRecord:
    """A failed job asked for again: a fresh start under the same id (same bytes if it succeeds)."""
    update: dict[str, object] = {"state": "queued", "error": None, "attempts": 0, "progress": progress}
    update |= {"report_state": "pending", "report_error": None, "report_attempts": 0, "finished_at": None}
    # a queued job has written nothing yet: the previous attempt's files are not its own
    update |= {"sha256": None, "size": None, "files": [], "worker": None, "updated_at": now()}
    return record.model_copy(update=update)


def invalidated(record: JobRecord, error: ErrorInfo) -> JobRecord:
    if record.state != "succeeded":
        return record
    return record.model_copy(update={"state": "failed", "error": error, "updated_at": now(), "finished_at": now()})


# --- the named transitions: each is one `update` --------------------------------------------------------


def start_attempt(records: JobRecords, job_id: str, worker: str, max_attempts: int) -> JobRecord:
    """queued or running -> running with one attempt more, by `worker` (host:pid), its progress back
    at 0 tensors and bytes done; a job whose worker died `max_attempts` times -> failed instead (the
    caller then removes what those attempts left unfinished: pipeline.job.discard_unfinished). A
    finished job is left as it is. The caller runs the job only when the returned record is running."""

    def change(record: JobRecord) -> JobRecord:
        if record.state in ("succeeded", "failed"):
            return record
        if record.attempts >= max_attempts:
            message = (
                f"the worker stopped {record.attempts} times while running this job; "
                "it may need more memory than the worker has"
            )
            error = ErrorInfo(type="job_failed", message=message)
            return record.model_copy(update={"state": "failed", "error": error, "finished_at": now()})
        # The status shows this attempt's progress: what an attempt that died had written is gone
        # with it (its temporary files are never committed), so the count starts again at 0.
        progress = record.progress.model_copy(update={"tensors_done": 0, "bytes_done": 0})
        update = {"state": "running", "attempts": record.attempts + 1, "worker": worker, "progress": progress}
        return record.model_copy(update=update)

    return records.update(job_id, change)


def republish_due(records: JobRecords, job_id: str, stale_after_s: float) -> bool:
    """Whether a queued job that no worker ever started (attempts 0) and whose record has not
    changed for `stale_after_s` seconds should be published again: its message may be lost (a
    worker that took it and died before its first attempt, a broker that lost it). True at most
    once per `stale_after_s` per job: the record is stamped now, under the lock, so concurrent
    resubmissions publish it once. See [Note: a lost message] in jobs.submit."""
    cutoff = datetime.now(UTC).timestamp() - stale_after_s
    due = False

    def change(record: JobRecord) -> JobRecord:
        nonlocal due
        due = record.state == "queued" and record.attempts == 0
        due = due and datetime.fromisoformat(record.updated_at).timestamp() <= cutoff
        return record.model_copy(update={"updated_at": now()}) if due else record

    records.update(job_id, change)
    return due


def release_attempt(records: JobRecords, job_id: str, worker: str) -> JobRecord:
    """running by `worker` -> queued, its attempt uncounted: the worker is stopping on purpose (its API
    shut down or was killed) rather than crashing, so the attempt says nothing about the job and must
    not bring it nearer MAX_ATTEMPTS (round two of issue 16: three API restarts failed a healthy job
    as "may need more memory"). Any other record is left as it is."""

    def change(record: JobRecord) -> JobRecord:
        if record.state != "running" or record.worker != worker:
            return record
        return record.model_copy(update={"state": "queued", "attempts": max(0, record.attempts - 1)})

    return records.update(job_id, change)


def succeed(records: JobRecords, job_id: str, files: list[FileInfo]) -> JobRecord:
    """running (or failed by a duplicate attempt meanwhile) -> succeeded with `files` (the last one is
    the main file: the weights, or the shard index, whose sha256 and size the record carries),
    progress at its totals and no error."""

    def change(record: JobRecord) -> JobRecord:
        if record.state == "succeeded":  # a duplicate attempt's success: the first one's record stands
            return record
        main, p = files[-1], record.progress
        progress = p.model_copy(update={"tensors_done": p.tensors_total, "bytes_done": p.bytes_total})
        update: dict[str, object] = {
            "state": "succeeded",
            "error": None,
            "sha256": main.sha256,
            "size": main.size,
            "files": files,
            "progress": progress,
            "report_state": "pending",  # computed after the weights (pipeline.job.publish_report)
            "report_error": None,
            "report_attempts": 0,
            "finished_at": now(),
        }
        return record.model_copy(update=update)

    return records.update(job_id, change)


def start_report(records: JobRecords, job_id: str, max_attempts: int, worker: str) -> JobRecord:
    """A succeeded job's pending report: one run at it more, by `worker` (host:pid, which the record
    then names: the weights' worker may be gone); when `max_attempts` runs already
    stopped their worker (a report that needs more memory than the worker has), -> failed instead,
    so it cannot restart the worker for ever. The caller computes the report only when the returned
    record's report is pending."""

    def change(record: JobRecord) -> JobRecord:
        if record.state != "succeeded" or record.report_state != "pending":
            return record
        if record.report_attempts >= max_attempts:
            message = (
                f"the worker stopped {record.report_attempts} times while computing the report; it may need more "
                "memory than the worker has (the weights are not affected)"
            )
            return record.model_copy(
                update={"report_state": "failed", "report_error": ErrorInfo(type="report_failed", message=message)}
            )
        return record.model_copy(update={"report_attempts": record.report_attempts + 1, "worker": worker})

    return records.update(job_id, change)


def release_report(records: JobRecords, job_id: str) -> JobRecord:
    """A pending report's run stopped on purpose (it yields to jobs waiting for their weights): that
    run is uncounted, as release_attempt does for a job."""

    def change(record: JobRecord) -> JobRecord:
        if record.state != "succeeded" or record.report_state != "pending":
            return record
        return record.model_copy(update={"report_attempts": max(0, record.report_attempts - 1)})

    return records.update(job_id, change)


def report_done(records: JobRecords, job_id: str, error: ErrorInfo | None = None) -> JobRecord:
    """A succeeded job's pending report -> ready (stored), or failed with `error`. Any other record is
    left as it is: a job resubmitted or failed meanwhile has no report to speak of."""

    def change(record: JobRecord) -> JobRecord:
        if record.state != "succeeded" or record.report_state != "pending":
            return record
        return record.model_copy(update={"report_state": "failed" if error else "ready", "report_error": error})

    return records.update(job_id, change)


def retry_report(records: JobRecords, job_id: str) -> bool:
    """A succeeded job whose report failed -> its report pending again; True when it changed (the
    caller then queues the job, whose worker computes only the report)."""
    retried = False

    def change(record: JobRecord) -> JobRecord:
        nonlocal retried
        retried = record.state == "succeeded" and record.report_state == "failed"
        update = {"report_state": "pending", "report_error": None, "report_attempts": 0}
        return record.model_copy(update=update) if retried else record

    records.update(job_id, change)
    return retried


def fail(
    records: JobRecords, job_id: str, message: str, error_type: str = "job_failed", loc: Sequence[str | int] = ()
) -> JobRecord:
    """running -> failed with the reason, and `loc`, the request field at fault where one is (e.g.
    policy.lsuv for a network LSUV cannot run). A job no longer running is left as it is: a success
    stands, and a job resubmitted meanwhile (queued) is not failed by its previous attempt."""
    error = ErrorInfo(type=error_type, message=message, loc=list(loc))

    def change(record: JobRecord) -> JobRecord:
        if record.state != "running":
            return record
        return record.model_copy(update={"state": "failed", "error": error, "finished_at": now()})

    return records.update(job_id, change)


def set_progress(records: JobRecords, job_id: str, progress: Progress) -> JobRecord:
    """The progress of a running job (a finished one keeps the progress it ended with)."""
    return records.update(job_id, lambda r: r.model_copy(update={"progress": progress}) if r.state == "running" else r)


def add_progress(records: JobRecords, job_id: str, tensors: int, nbytes: int) -> JobRecord:
    """Add to a running job's progress, never past its totals (a redelivered part counts its tensors again)."""

    def change(record: JobRecord) -> JobRecord:
        if record.state != "running":
            return record
        p = record.progress
        done = {"tensors_done": min(p.tensors_total, p.tensors_done + tensors),
                "bytes_done": min(p.bytes_total, p.bytes_done + nbytes)}  # fmt: skip
        return record.model_copy(update={"progress": p.model_copy(update=done)})

    return records.update(job_id, change)


# --- files ---------------------------------------------------------------------------------------------

JOB, REQUEST, PLAN, LOCK, PART_ATTEMPTS = "job.json", "request.json", "plan.json", "job.lock", "part-attempts.json"


class FileJobRecords:
    """Records as files, each written to a temporary name and renamed (a reader never sees a partial
    one), each change under an exclusive flock of the job's lock file:

        <data_dir>/jobs/<id>/request.json, plan.json   written once by create
        <data_dir>/jobs/<id>/job.json                  the record (its presence is the job's)
        <data_dir>/jobs/<id>/job.lock                  the lock every change holds
        <data_dir>/jobs/<id>/part-attempts.json        starts of each fan-out part
    """

    def __init__(self, data_dir: Path) -> None:
        self.jobs = data_dir / "jobs"
        self.jobs.mkdir(parents=True, exist_ok=True)

    def _dir(self, job_id: str) -> Path:
        return self.jobs / check_id(job_id)

    @contextlib.contextmanager
    def _locked(self, job_id: str, create: bool = False) -> Iterator[Path]:
        folder = self._dir(job_id)
        if create:
            folder.mkdir(exist_ok=True)
        try:
            lock = open(folder / LOCK, "a")  # noqa: SIM115 (held for the block)
        except FileNotFoundError:
            raise not_found(job_id) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield folder

    def _read(self, job_id: str, name: str) -> bytes:
        try:
            return (self._dir(job_id) / name).read_bytes()
        except FileNotFoundError:
            raise not_found(job_id) from None

    def create(self, request: InitRequest, plan: Plan, progress: Progress) -> tuple[JobRecord, bool]:
        job_id = plan.request_id
        with self._locked(job_id, create=True) as folder:
            try:
                record = JobRecord.model_validate_json((folder / JOB).read_bytes())
            except FileNotFoundError:
                # request and plan first: a record (the job's existence) always has them
                try:
                    atomic_write(folder / REQUEST, request.model_dump_json().encode())
                    atomic_write(folder / PLAN, plan_json_chunks(plan))
                    (folder / PART_ATTEMPTS).unlink(missing_ok=True)
                    return self._write(folder, fresh(job_id, progress)), True
                except BaseException:  # a full volume, say: no job, so none of its records either
                    for name in (REQUEST, PLAN):
                        (folder / name).unlink(missing_ok=True)
                    raise
            if record.state != "failed":
                return record, False
            (folder / PART_ATTEMPTS).unlink(missing_ok=True)
            return self._write(folder, restart(record, progress)), True

    @staticmethod
    def _write(folder: Path, record: JobRecord) -> JobRecord:
        atomic_write(folder / JOB, record.model_dump_json(indent=1).encode())
        return record

    def exists(self, job_id: str) -> bool:
        return (self._dir(job_id) / JOB).exists()

    def load(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(self._read(job_id, JOB))

    def load_request(self, job_id: str) -> InitRequest:
        return InitRequest.model_validate_json(self._read(job_id, REQUEST))

    def load_plan(self, job_id: str) -> Plan:
        return Plan.model_validate_json(self._read(job_id, PLAN))

    def update(self, job_id: str, change: Change) -> JobRecord:
        with self._locked(job_id) as folder:
            current = self.load(job_id)
            stored = apply(current, change)
            return current if stored is None else self._write(folder, stored)

    def invalidate(self, job_id: str, error: ErrorInfo) -> JobRecord:
        with self._locked(job_id) as folder:
            current = self.load(job_id)
            stored = invalidated(current, error)
            return current if stored is current else self._write(folder, stored)

    def count_part_attempt(self, job_id: str, k: int) -> int:
        with self._locked(job_id) as folder:
            path = folder / PART_ATTEMPTS
            counts: dict[str, int] = json.loads(path.read_bytes()) if path.exists() else {}
            counts[str(k)] = counts.get(str(k), 0) + 1
            atomic_write(path, json.dumps(counts).encode())
        return counts[str(k)]

    def records(self) -> Iterator[JobRecord]:
        for entry in self.jobs.iterdir():
            if JOB_ID.match(entry.name):
                try:
                    yield self.load(entry.name)
                except (JobNotFoundError, ValueError):
                    continue

    def delete(self, job_id: str) -> None:
        with contextlib.suppress(JobNotFoundError), self._locked(job_id) as folder:
            for name in (JOB, REQUEST, PLAN, PART_ATTEMPTS):
                (folder / name).unlink(missing_ok=True)
        folder = self._dir(job_id)
        (folder / LOCK).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when no artifact is left in it


__all__ = [
    "TRANSITIONS",
    "FileJobRecords",
    "JobRecords",
    "add_progress",
    "fail",
    "open_records",
    "republish_due",
    "set_progress",
    "start_attempt",
    "succeed",
]
