"""The job store: one directory per content-addressed job id, which is also the worker's queue.

    <data_dir>/jobs/<id>/request.json, plan.json, job.json   the job's records (jobs.records: files
                                        here, or keys in Redis under Celery), changed only under its lock
    <data_dir>/jobs/<id>/weights.safetensors, report.json   the artifacts, with the local artifact
                                        store (write.artifacts; else in S3)
    <data_dir>/queue/<id>               one empty marker per job the embedded worker still owes,
                                        or (Celery) not yet published: the outbox
    <data_dir>/reports/<id>.json        reports kept for the record (POST /v1/reports), local store

Every file is written to a temporary name and renamed, so a reader never sees a partial file,
and a job whose process died stays in queue/ and is resumed when a worker starts. With Celery
the broker holds the queue and the markers are an outbox (initium.service.jobs.queue).
Ids are validated hex digests before they touch a path, so nothing a user sends names a file.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

from initium.schemas.job import JobRecord, Progress
from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.identity import JOB_ID, check_id
from initium.service.jobs.records import FileJobRecords, JobRecords
from initium.service.write.artifacts import Artifacts, open_artifacts

WEIGHTS = "weights.safetensors"
REPORT = "report.json"
HEARTBEAT = "worker.heartbeat"


def _last_use(job_dir: Path, record: JobRecord, served: float | None) -> float:
    """When the job was last served (the artifact store knows), else when its record last changed."""
    if served is not None:
        return served
    try:
        return (job_dir / "job.json").stat().st_mtime
    except FileNotFoundError:
        return datetime.fromisoformat(record.updated_at).timestamp()  # records kept elsewhere (Redis)


class JobStore:
    """A deployment's jobs: their records (files under data_dir unless `records` says otherwise),
    the queue markers and their artifacts (the local store unless `artifacts` says otherwise, which
    also keeps the reports posted for the record)."""

    def __init__(self, data_dir: Path, records: JobRecords | None = None, artifacts: Artifacts | None = None) -> None:
        self.root = data_dir
        self.jobs = data_dir / "jobs"
        self.queue = data_dir / "queue"
        for d in (self.jobs, self.queue):
            d.mkdir(parents=True, exist_ok=True)
        self.records: JobRecords = records if records is not None else FileJobRecords(data_dir)
        # The job's bytes (weights, report, parts): write.artifacts, the only code that touches them.
        self.artifacts: Artifacts = artifacts if artifacts is not None else open_artifacts("local", data_dir)

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / check_id(job_id)

    def create(self, request: InitRequest, plan: Plan, progress: Progress) -> tuple[JobRecord, bool]:
        """records.create, then the queue marker when the job is new or restarted (True). The job's
        folder (its artifacts') is made here, wherever its records live."""
        record, created = self.records.create(request, plan, progress)
        if created:
            self.job_dir(record.id).mkdir(exist_ok=True)
            self.enqueue(record.id)
        return record, created

    def enqueue(self, job_id: str) -> None:
        (self.queue / job_id).touch()

    def dequeue(self, job_id: str) -> None:
        (self.queue / job_id).unlink(missing_ok=True)

    def queued_ids(self) -> list[str]:
        """Ids the worker still owes, oldest first."""
        entries = [e for e in os.scandir(self.queue) if JOB_ID.match(e.name)]
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return [e.name for e in entries]

    def artifact(self, job_id: str, name: str) -> Path:
        """Where the local artifact store keeps `name` (tests read the files there)."""
        return self.job_dir(job_id) / name

    def evict(self, max_bytes: int | None, max_age_s: float | None, now_s: float) -> list[str]:
        """Remove finished jobs whose last use is older than max_age_s, then the least recently used
        until the store holds at most max_bytes; queued and running jobs are never touched."""
        finished = []
        for record in self.records.records():
            if record.state in ("succeeded", "failed"):
                usage = self.artifacts.usage(record.id)
                finished.append((_last_use(self.jobs / record.id, record, usage.last_used), usage.bytes, record.id))
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
        for job in removed:  # the record first: no status ever points at files already gone
            self.records.delete(job)
            self.artifacts.delete_job(job)
            shutil.rmtree(self.jobs / job, ignore_errors=True)
        return removed
