"""The job store: one directory per content-addressed job id, which is also the worker's queue.

    <data_dir>/jobs/<id>/request.json   the normalized request (written once)
    <data_dir>/jobs/<id>/job.json       state, progress, attempts, error, sha256
    <data_dir>/jobs/<id>/weights.safetensors, report.json   (appear atomically on success)
    <data_dir>/queue/<id>               one empty marker per job the embedded worker still owes,
                                        or (Celery) not yet published: the outbox
    <data_dir>/reports/<id>.json        reports kept for the record (POST /v1/reports)

Every file is written to a temporary name and renamed, so a reader never sees a partial file,
and a job whose process died stays in queue/ and is resumed when a worker starts. With Celery
the broker holds the queue and the markers are an outbox (initium.service.jobs.queue).
Ids are validated hex digests before they touch a path, so nothing a user sends names a file.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from initium.schemas.job import JobRecord, Progress
from initium.schemas.request import InitRequest
from initium.service.errors import JobNotFoundError

_ID = re.compile(r"^[0-9a-f]{64}$")
WEIGHTS = "weights.safetensors"
REPORT = "report.json"
# (size, mtime_ns, inode) of each artifact right after the worker that hashed it put it in place.
HASHED = "hashed.json"
HEARTBEAT = "worker.heartbeat"
ACCESSED = "accessed"


def _last_use(job_dir: Path) -> float:
    for name in (ACCESSED, "job.json"):
        try:
            return (job_dir / name).stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


def _size(job_dir: Path) -> int:
    return sum(f.stat().st_size for f in job_dir.iterdir() if f.is_file())


def attempt_suffix() -> str:
    """A temporary-name suffix of this process's own (`.partial`, which cleanups look for): two
    attempts at one job, on two workers or one, never write to the same temporary file."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.jobs = data_dir / "jobs"
        self.queue = data_dir / "queue"
        self.reports = data_dir / "reports"
        for d in (self.jobs, self.queue, self.reports):
            d.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not _ID.match(job_id):
            raise JobNotFoundError(f"no job {job_id!r}: ids are 64 lowercase hex digits", ("id",))
        return self.jobs / job_id

    def exists(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "job.json").exists()

    def load(self, job_id: str) -> JobRecord:
        path = self.job_dir(job_id) / "job.json"
        try:
            return JobRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(f"no job {job_id}; submit it with POST /v1/initializations", ("id",)) from None

    def save(self, record: JobRecord) -> JobRecord:
        record = record.model_copy(update={"updated_at": now()})
        atomic_write(self.job_dir(record.id) / "job.json", record.model_dump_json(indent=1).encode())
        return record

    def load_request(self, job_id: str) -> InitRequest:
        return InitRequest.model_validate_json((self.job_dir(job_id) / "request.json").read_bytes())

    def create(self, job_id: str, request: InitRequest, progress: Progress) -> JobRecord:
        """Persist a new queued job (request first, then state, then the queue marker)."""
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(exist_ok=True)
        atomic_write(job_dir / "request.json", request.model_dump_json().encode())
        stamp = now()
        record = JobRecord(id=job_id, state="queued", progress=progress, created_at=stamp, updated_at=stamp)
        record = self.save(record)
        self.enqueue(job_id)
        return record

    def requeue(self, record: JobRecord, progress: Progress) -> JobRecord:
        """A failed job asked for again gets a fresh start (same id, same bytes if it succeeds)."""
        record = self.save(
            record.model_copy(update={"state": "queued", "error": None, "attempts": 0, "progress": progress})
        )
        self.enqueue(record.id)
        return record

    def enqueue(self, job_id: str) -> None:
        (self.queue / job_id).touch()

    def dequeue(self, job_id: str) -> None:
        (self.queue / job_id).unlink(missing_ok=True)

    def queued_ids(self) -> list[str]:
        """Ids the worker still owes, oldest first."""
        entries = [e for e in os.scandir(self.queue) if _ID.match(e.name)]
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return [e.name for e in entries]

    def report_path(self, request_id: str) -> Path:
        """Where a report posted for the record lives (the id is validated like a job id)."""
        return self.reports / f"{self.job_dir(request_id).name}.json"

    def artifact(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / name

    def touch(self, job_id: str) -> None:
        """Record that the job's artifacts were served (eviction removes the least recently used)."""
        (self.job_dir(job_id) / ACCESSED).touch()

    def records(self) -> Iterator[JobRecord]:
        """Every readable job record (a job being created or evicted right now is skipped)."""
        for entry in os.scandir(self.jobs):
            if _ID.match(entry.name):
                try:
                    yield self.load(entry.name)
                except (JobNotFoundError, ValueError):
                    continue

    def evict(self, max_bytes: int | None, max_age_s: float | None, now_s: float) -> list[str]:
        """Remove finished jobs whose last use is older than max_age_s, then the least recently used
        until the store holds at most max_bytes; queued and running jobs are never touched."""
        finished = []
        for record in self.records():
            if record.state in ("succeeded", "failed"):
                path = self.jobs / record.id
                finished.append((_last_use(path), _size(path), record.id))
        finished.sort()
        expired = {job for used, _, job in finished if max_age_s is not None and now_s - used > max_age_s}
        removed = [job for _, _, job in finished if job in expired]
        total = sum(size for _, size, job in finished if job not in expired)
        for _, size, job in finished:  # least recently used first
            if max_bytes is None or total <= max_bytes:
                break
            if job not in expired:
                removed.append(job)
                total -= size
        for job in removed:
            shutil.rmtree(self.jobs / job, ignore_errors=True)
        return removed
