"""Submitting and reading jobs: the logic behind the initialization routes, free of HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from initium.schemas.errors import ErrorInfo
from initium.schemas.job import JobRecord, JobStatus, Links, Progress
from initium.schemas.plan import Plan
from initium.schemas.report import RecordedReport, Report
from initium.schemas.request import InitRequest
from initium.service.errors import (
    ArtifactCorruptError,
    ConflictError,
    JobFailedError,
    JobNotFoundError,
    JobNotReadyError,
    RequestInvalidError,
)
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.queue import Dispatcher
from initium.service.jobs.store import HASHED, REPORT, WEIGHTS, JobStore, atomic_write, now
from initium.service.plan.planner import Limits, make_plan

log = logging.getLogger("initium.api")


@dataclass(frozen=True)
class Submission:
    status: JobStatus
    created: bool


def plan_request(request: InitRequest, limits: Limits, presets: PresetStore) -> Plan:
    """The plan, refusing a request that leaves a parameter without a rule."""
    plan = make_plan(request, limits, presets.all())
    if plan.uncovered:
        shown = ", ".join(plan.uncovered[:5]) + (" ..." if len(plan.uncovered) > 5 else "")
        raise RequestInvalidError(
            f"no rule initializes {len(plan.uncovered)} parameters ({shown}); add a rule that "
            'matches them, e.g. {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}, or a preset; '
            "POST /v1/plans shows the whole plan",
            ("policy", "rules"),
        )
    return plan


def submit(store: JobStore, request: InitRequest, limits: Limits, presets: PresetStore) -> Submission:
    """Create the job, or return the existing one for an identical request (same id, same bytes)."""
    plan = plan_request(request, limits, presets)
    log.info("submitted job %s (%d tensors, %d bytes)", plan.request_id, plan.totals.tensors, plan.totals.bytes)
    progress = Progress(tensors_done=0, tensors_total=plan.totals.tensors, bytes_done=0, bytes_total=plan.totals.bytes)
    if not store.exists(plan.request_id):
        return Submission(to_status(store.create(plan.request_id, request, progress)), created=True)
    record = store.load(plan.request_id)
    if record.state == "failed":
        return Submission(to_status(store.requeue(record, progress)), created=True)
    return Submission(to_status(record), created=False)


def dispatch(dispatcher: Dispatcher, job_id: str) -> None:
    """Hand a persisted job to the engine; if the broker is unreachable it stays in the outbox and
    is published later (the caller already has its 202: the job is accepted and durable)."""
    try:
        dispatcher.publish(job_id)
    except Exception as exc:
        log.warning("job %s stays in the outbox: %s: %s", job_id, type(exc).__name__, exc)


def to_status(record: JobRecord) -> JobStatus:
    base = f"/v1/initializations/{record.id}"
    links = Links(self=base, weights=f"{base}/weights", report=f"{base}/report", report_html=f"{base}/report.html")
    return JobStatus(**record.model_dump(), links=links)


def require_succeeded(store: JobStore, job_id: str) -> JobRecord:
    record = store.load(job_id)
    if record.state == "failed":
        message = record.error.message if record.error else "unknown error"
        raise JobFailedError(f"job {job_id} failed ({message}); resubmit the request to retry", ("id",))
    if record.state != "succeeded":
        raise JobNotReadyError(
            f"job {job_id} is {record.state}; poll GET /v1/initializations/{job_id} until it succeeds", ("id",)
        )
    return record


def load_report(store: JobStore, job_id: str) -> Report:
    require_succeeded(store, job_id)
    return Report.model_validate_json(store.artifact(job_id, REPORT).read_bytes())


def weights_path_and_sha(store: JobStore, job_id: str, verified: VerifiedFiles) -> tuple[str, str]:
    """The single weights file to serve (sharded jobs name their files instead)."""
    record = require_succeeded(store, job_id)
    if record.files and record.files[-1].name != WEIGHTS:
        names = ", ".join(f.name for f in record.files)
        raise JobNotReadyError(
            f"job {job_id} wrote sharded files ({names}); GET /v1/initializations/{job_id}/files/<name> for each",
            ("id",),
        )
    return file_path_and_sha(store, job_id, WEIGHTS, verified)


def file_path_and_sha(store: JobStore, job_id: str, name: str, verified: VerifiedFiles) -> tuple[str, str]:
    """One of the job's files, checked against its sha256 first (once per file version). Only names
    the job recorded are served, so nothing a user sends becomes a path."""
    record = require_succeeded(store, job_id)
    known = {f.name: f.sha256 for f in record.files} or ({WEIGHTS: record.sha256} if record.sha256 else {})
    if name not in known:
        raise JobNotFoundError(f"job {job_id} has no file {name!r}; its files: {', '.join(known)}", ("name",))
    path = store.artifact(job_id, name)
    sha256 = known[name]
    if sha256 is None or not verified.matches(path, sha256):
        # Never serve a file that is not what the job wrote: fail the job, so resubmitting regenerates it.
        error = ErrorInfo(type="artifact_corrupt", message="the stored weights no longer match their sha256")
        store.save(record.model_copy(update={"state": "failed", "error": error}))
        raise ArtifactCorruptError(f"job {job_id}'s stored weights no longer match their sha256; resubmit the request")
    store.touch(job_id)
    return str(path), sha256


class VerifiedFiles:
    """Files known to hold their sha256, by (path, size, mtime, inode): a large artifact is hashed at
    most once per API process, and not at all when the worker that wrote it stamped it (HASHED)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int, int], str] = {}

    def matches(self, path: Path, sha256: str) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._seen:
            self._seen[key] = _stamped_sha256(path, key) or _sha256_of(path)
        return hmac.compare_digest(self._seen[key], sha256)


def _stamped_sha256(path: Path, key: tuple[str, int, int, int]) -> str | None:
    """The sha256 the worker computed while writing `path`, if the file is untouched since."""
    try:
        stamp = json.loads((path.parent / HASHED).read_bytes())[path.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(stamp, dict) or (stamp.get("size"), stamp.get("mtime_ns"), stamp.get("ino")) != key[1:]:
        return None
    sha256 = stamp.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_report(store: JobStore, report: Report) -> tuple[RecordedReport, bool]:
    """Keep a report under its request id; True when it is new. The same request and algorithm
    version give the same bytes, so one id recorded with two artifacts is a conflict."""
    request_id, sha256 = report.provenance.request_id, report.artifact.sha256
    path = store.report_path(request_id)
    created = not path.exists()
    if created:
        atomic_write(path, report.model_dump_json().encode())
    else:
        kept = Report.model_validate_json(path.read_bytes())
        if kept.artifact.sha256 != sha256:
            raise ConflictError(
                f"request {request_id} is recorded with artifact {kept.artifact.sha256}, not {sha256}; "
                "the same request and algorithm version give the same bytes: check the report's provenance",
                ("artifact", "sha256"),
            )
    recorded = RecordedReport(id=request_id, sha256=sha256, recorded_at=now(), location=f"/v1/reports/{request_id}")
    return recorded, created


def recorded_report(store: JobStore, request_id: str) -> Report:
    path = store.report_path(request_id)
    if not path.exists():
        raise JobNotFoundError(f"no report recorded for {request_id}; POST it to /v1/reports", ("id",))
    return Report.model_validate_json(path.read_bytes())
