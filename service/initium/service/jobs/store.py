"""The job store: one directory per content-addressed job id, which is also the worker's queue.

    <data_dir>/jobs/<id>/request.json, plan.json, job.json   the job's records (jobs.records: files
                                        here, or keys in Redis under Celery), changed only under its lock
    <data_dir>/jobs/<id>/weights.safetensors, report.json   the artifacts, with the local artifact
                                        store (write.artifacts; else in S3)
    <data_dir>/queue/<id>               one empty marker per large job the embedded workers still owe
                                        (and every job queued before lanes existed), or (Celery) not
                                        yet published: the outbox
    <data_dir>/queue/small/<id>         the same for a small job (under large_job_bytes and large_job_tensors)
    <data_dir>/jobs/<id>/run.lock       flocked by the embedded worker running the job
    <data_dir>/reports/<id>.json        reports kept for the record (POST /v1/reports), local store

Every file is written to a temporary name and renamed, so a reader never sees a partial file,
and a job whose process died stays in queue/ and is resumed when a worker starts. With Celery
the broker holds the queue and the markers are an outbox (initium.service.jobs.queue).
Ids are validated hex digests before they touch a path, so nothing a user sends names a file.

[Note: lanes] A job is routed at submit by its planned bytes and tensors to a lane, so that nobody's
small job waits behind someone else's huge one (issue 16): `large` (at least large_job_bytes, or
at least large_job_tensors: 100,000 one-element tensors are 400 KB but minutes of per-tensor
statistics) or `small`.
The embedded default runs one worker per lane; the large lane's takes a small job when it has no
large one, the small lane's never takes a large one. Under Celery each lane is a queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from initium.schemas.job import JobRecord, Progress
from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.errors import InsufficientStorageError, volume_full_as_507
from initium.service.identity import JOB_ID, check_id
from initium.service.jobs.records import FileJobRecords, JobRecords
from initium.service.write.artifacts import Artifacts, open_artifacts

WEIGHTS = "weights.safetensors"
REPORT = "report.json"
LARGE, SMALL = "large", "small"
LANES = (LARGE, SMALL)
RUN_LOCK = "run.lock"
REPORTS_PREFIX = "reports/"  # marks a recorded report among the entries evict() removed


def lane_for(nbytes: int, large_job_bytes: int | None, tensors: int = 0, large_job_tensors: int | None = None) -> str:
    """The lane of a job that writes `nbytes` (its plan's totals.bytes) in `tensors` tensors: large
    from either threshold on (a job's time grows with its bytes and, through each tensor's
    statistics and report entry, with its tensors); every job is large when no byte threshold is
    set. See [Note: lanes]."""
    if large_job_bytes is None or nbytes >= large_job_bytes:
        return LARGE
    return LARGE if large_job_tensors is not None and tensors >= large_job_tensors else SMALL


def heartbeat_name(lane: str) -> str:
    """The file a lane's embedded worker touches every second; it holds the worker's pid."""
    return f"worker-{lane}.heartbeat"


# The exit status of an embedded worker that cannot use its device: its supervisor then restarts it
# only slowly (the device will not appear by itself) and /readyz shows why.
EXIT_DEVICE_UNUSABLE = 3


def device_problem_name(lane: str) -> str:
    """The file a lane's embedded worker leaves when it cannot use its device: why (for /readyz);
    removed by the next worker that can."""
    return f"worker-{lane}.device-problem"


def _mtime_ns(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat().st_mtime_ns
    except FileNotFoundError:  # dequeued since it was listed: it sorts last and is skipped when claimed
        return 2**63


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
    also keeps the reports posted for the record). A job of at least `large_job_bytes` planned bytes
    or `large_job_tensors` tensors is queued in the large lane, a smaller one in the small lane;
    large_job_bytes None: every job is large."""

    # A queued job never started for this long is published again when resubmitted (the API sets
    # it from INITIUM_REPUBLISH_AFTER_S; see [Note: a lost message] in jobs.submit).
    republish_after_s: float = 600.0

    def __init__(
        self,
        data_dir: Path,
        records: JobRecords | None = None,
        artifacts: Artifacts | None = None,
        large_job_bytes: int | None = None,
        large_job_tensors: int | None = None,
    ) -> None:
        self.root = data_dir
        self.large_job_bytes, self.large_job_tensors = large_job_bytes, large_job_tensors
        self.jobs = data_dir / "jobs"
        self.queue = data_dir / "queue"
        for d in (self.jobs, self.queue, self.queue / SMALL):
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
            try:
                with volume_full_as_507("the job's queue marker"):
                    self.job_dir(record.id).mkdir(exist_ok=True)
                    self.enqueue(record.id, self.lane(plan.totals.bytes, plan.totals.tensors))
            except InsufficientStorageError:
                # No queued job without its marker (nothing would ever run it): a retry once there is
                # room creates it afresh under the same id.
                self.records.delete(record.id)
                raise
        return record, created

    def lane(self, nbytes: int, tensors: int) -> str:
        """The lane of a job of `nbytes` planned bytes in `tensors` tensors, by this store's thresholds."""
        return lane_for(nbytes, self.large_job_bytes, tensors, self.large_job_tensors)

    def _lane_dir(self, lane: str) -> Path:
        # The large lane keeps the queue's own folder, so markers written before lanes existed
        # are still taken (by the large lane, which takes every job).
        return self.queue if lane == LARGE else self.queue / lane

    def enqueue(self, job_id: str, lane: str = LARGE) -> None:
        (self._lane_dir(lane) / check_id(job_id)).touch()

    def dequeue(self, job_id: str) -> None:
        for lane in LANES:
            (self._lane_dir(lane) / job_id).unlink(missing_ok=True)

    def lane_of(self, job_id: str) -> str:
        """The lane the job is queued in (large when it is queued in none)."""
        return SMALL if (self._lane_dir(SMALL) / job_id).exists() else LARGE

    def queued_ids(self, lane: str | None = None) -> list[str]:
        """Ids the workers still owe in `lane` (None: in every lane), oldest first."""
        entries = []
        for name in LANES if lane is None else (lane,):
            with contextlib.suppress(FileNotFoundError):
                entries += [e for e in os.scandir(self._lane_dir(name)) if JOB_ID.match(e.name)]
        entries.sort(key=lambda e: (_mtime_ns(e), e.name))
        return [e.name for e in entries]

    @contextlib.contextmanager
    def claim(self, job_id: str) -> Iterator[bool]:
        """Whether this process may run the job now: an exclusive flock of its run.lock, held for the
        block. False while another worker (the other lane's, or an orphaned one) holds it, or when the
        job's folder is gone. The kernel releases it when the holder dies, so no claim outlives it."""
        try:
            lock = open(self.job_dir(job_id) / RUN_LOCK, "a")  # noqa: SIM115 (held for the block)
        except FileNotFoundError:
            yield False
            return
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    def artifact(self, job_id: str, name: str) -> Path:
        """Where the local artifact store keeps `name` (tests read the files there)."""
        return self.job_dir(job_id) / name

    def evict(self, max_bytes: int | None, max_age_s: float | None, now_s: float) -> list[str]:
        """Remove finished jobs and reports kept for the record (POST /v1/reports) whose last use is
        older than max_age_s, then the least recently used of both until the store holds at most
        max_bytes; queued and running jobs are never touched. Returns the job ids removed, then
        `REPORTS_PREFIX + id` for each report removed (issue 16: reports alone filled a volume)."""
        finished = []  # (last use, bytes, entry): an entry is a job id or REPORTS_PREFIX + request id
        for record in self.records.records():
            if record.state in ("succeeded", "failed"):
                usage = self.artifacts.usage(record.id)
                finished.append((_last_use(self.jobs / record.id, record, usage.last_used), usage.bytes, record.id))
        for request_id, usage in self.artifacts.report_usage().items():
            finished.append((usage.last_used or 0.0, usage.bytes, REPORTS_PREFIX + request_id))
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
        reports = [entry for entry in removed if entry.startswith(REPORTS_PREFIX)]
        for job in removed:  # the record first: no status ever points at files already gone
            if job.startswith(REPORTS_PREFIX):
                self.artifacts.delete_report(job.removeprefix(REPORTS_PREFIX))
                continue
            self.records.delete(job)
            self.artifacts.delete_job(job)
            shutil.rmtree(self.jobs / job, ignore_errors=True)
        return [job for job in removed if job not in reports] + reports
