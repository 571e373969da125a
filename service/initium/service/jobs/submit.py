"""Submitting and reading jobs: the logic behind the initialization routes, free of HTTP."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from initium.schemas.errors import ErrorInfo
from initium.schemas.job import JobRecord, JobStatus, Links, Progress
from initium.schemas.plan import Plan
from initium.schemas.report import RecordedReport, Report
from initium.schemas.request import InitRequest
from initium.schemas.wording import count
from initium.service.errors import (
    ArtifactCorruptError,
    ConflictError,
    JobFailedError,
    JobNotFoundError,
    JobNotReadyError,
    ReportFailedError,
    ReportPendingError,
    RequestInvalidError,
)
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.queue import Dispatcher
from initium.service.jobs.records import now, republish_due, retry_report
from initium.service.jobs.store import REPORT, WEIGHTS, JobStore
from initium.service.plan.limits import Limits
from initium.service.plan.output import release_plan
from initium.service.plan.planner import make_plan
from initium.service.write.artifacts import Artifacts, Stamp, hashed_sha256, sha256_of

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
            f"no rule initializes {count(len(plan.uncovered), 'parameter')} ({shown}); add a rule that "
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
    # A new job, or a failed one started afresh (same id, same bytes if it succeeds), is created
    # with the plan just made: workers read it and never plan again.
    record, created = store.create(request, plan, progress)
    unstarted = not created and record.state == "queued" and record.attempts == 0
    if unstarted and republish_due(store.records, record.id, store.republish_after_s):
        # [Note: a lost message] A job accepted but never started may have lost its message (a
        # worker took it and died before its first attempt; a broker restarted without its data):
        # resubmitting it, past a wait no healthy queue needs, publishes it again (the queue marker,
        # then the engine; created=True makes the caller dispatch it). A duplicate is harmless (see
        # [Note: outbox] in jobs.queue): the second message finds the job finished, or runs a second
        # attempt at the same bytes that never touches a published success (pipeline.job.Superseded).
        log.warning("job %s: queued without an attempt for over %.0f s; published again", record.id,
                    store.republish_after_s)  # fmt: skip
        if record.id not in store.queued_ids():
            store.enqueue(record.id, store.lane(plan.totals.bytes, plan.totals.tensors))
        created = True
    if not created and record.state == "succeeded" and retry_report(store.records, record.id):
        # Its report failed before: queued again, the worker computes only the report (pipeline.loop.run_one).
        record = store.records.load(record.id)
        store.enqueue(record.id, store.lane(plan.totals.bytes, plan.totals.tensors))
        created = True
    release_plan(plan)  # a batch at a time: freeing 100,000 tensors at once stalls every thread
    return Submission(to_status(record), created=created)


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
    record = store.records.load(job_id)
    if record.state == "failed":
        message = record.error.message if record.error else "unknown error"
        raise JobFailedError(f"job {job_id} failed ({message}); resubmit the request to retry", ("id",))
    if record.state != "succeeded":
        raise JobNotReadyError(
            f"job {job_id} is {record.state}; poll GET /v1/initializations/{job_id} until it succeeds", ("id",)
        )
    return record


def load_report(store: JobStore, job_id: str) -> Report:
    """A succeeded job's report: ReportPendingError while it is computed after the weights,
    ReportFailedError when it could not be (see [Note: weights first] in initium.schemas.job). One
    that is gone from the store (or no longer parses) fails the job as artifact_corrupt, as weights
    that no longer match their sha256 do, so resubmitting regenerates both."""
    record = require_succeeded(store, job_id)
    if record.report_state == "pending":
        raise ReportPendingError(
            f"job {job_id}'s weights are ready; its report is still being computed: retry after Retry-After",
            ("id",),
        )
    if record.report_state == "failed":
        reason = record.report_error.message if record.report_error else "no reason recorded"
        raise ReportFailedError(reason, ("id",))
    try:
        return Report.model_validate_json(store.artifacts.get(job_id, REPORT))
    except (FileNotFoundError, ValidationError):
        error = ErrorInfo(type="artifact_corrupt", message="the stored report is missing or unreadable")
        store.records.invalidate(job_id, error)
        raise ArtifactCorruptError(
            f"job {job_id}'s stored report is missing or unreadable; resubmit the request"
        ) from None


@dataclass(frozen=True)
class StoredFile:
    """A job's file, checked against its sha256, ready to serve from the artifact store (size in bytes)."""

    job_id: str
    name: str
    sha256: str
    size: int


def weights_file(store: JobStore, job_id: str, verified: VerifiedFiles) -> StoredFile:
    """The single weights file to serve (sharded jobs name their files instead)."""
    record = require_succeeded(store, job_id)
    if record.files[-1].name != WEIGHTS:  # a succeeded job lists its files, the main one last
        names = ", ".join(f.name for f in record.files)
        raise JobNotReadyError(
            f"job {job_id} wrote sharded files ({names}); GET /v1/initializations/{job_id}/files/<name> for each",
            ("id",),
        )
    return job_file(store, job_id, WEIGHTS, verified)


def job_file(store: JobStore, job_id: str, name: str, verified: VerifiedFiles) -> StoredFile:
    """One of the job's files, checked against its sha256 first (once per stored version). Only names
    the job recorded are served, so nothing a user sends names an object."""
    record = require_succeeded(store, job_id)
    known = {f.name: f.sha256 for f in record.files}
    if name not in known:
        raise JobNotFoundError(f"job {job_id} has no file {name!r}; its files: {', '.join(known)}", ("name",))
    sha256 = known[name]
    size = verified.matching_size(store.artifacts, job_id, name, sha256)
    if size is None:
        # Never serve a file that is not what the job wrote: fail the job (the one exit from succeeded,
        # see [Note: job records]), so resubmitting regenerates it.
        error = ErrorInfo(type="artifact_corrupt", message="the stored weights no longer match their sha256")
        store.records.invalidate(job_id, error)
        raise ArtifactCorruptError(f"job {job_id}'s stored weights no longer match their sha256; resubmit the request")
    store.artifacts.touch(job_id)
    return StoredFile(job_id=job_id, name=name, sha256=sha256, size=size)


class VerifiedFiles:
    """Stored files known to hold their sha256, by (job, name, stamp): a large artifact is hashed at
    most once per API process, and not at all when the worker that wrote it stamped it
    (write.artifacts.record_hashed): local stamps are size, mtime and inode; S3's, size and ETag."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, Stamp], str] = {}

    def matching_size(self, artifacts: Artifacts, job_id: str, name: str, sha256: str) -> int | None:
        """The file's size when its stored version holds `sha256`; None when it is missing or differs."""
        stamp = artifacts.stamp(job_id, name)
        if stamp is None:
            return None
        key = (job_id, name, stamp)
        if key not in self._seen:
            try:
                self._seen[key] = hashed_sha256(artifacts, job_id, name, stamp) or _sha256_of(artifacts, job_id, name)
            except FileNotFoundError:  # removed since its stamp was read
                return None
        return stamp.size if hmac.compare_digest(self._seen[key], sha256) else None


def _sha256_of(artifacts: Artifacts, job_id: str, name: str) -> str:
    return sha256_of(artifacts, job_id, name)


def record_report(store: JobStore, report: Report) -> tuple[RecordedReport, bool]:
    """Keep a report under its request id; True when it is new.

    For a request this server has a job for, the record is the server's own report (the job's
    report.json): a report that differs from it is a ConflictError (409) naming the first field
    that differs, one sent before the job succeeded a JobNotReadyError (409), and an equal one is
    accepted as already recorded (issue 16: a forged report, artifact sha256 zeroed, was kept and
    the genuine one then refused for good). For any other id the same request and algorithm version
    give the same bytes, so one id recorded with two artifacts is a conflict."""
    request_id, sha256 = report.provenance.request_id, report.artifact.sha256
    location = f"/v1/reports/{request_id}"
    if store.records.exists(request_id):
        _check_own_report(store, report)
        return RecordedReport(id=request_id, sha256=sha256, recorded_at=now(), location=location), False
    stored = store.artifacts.get_report(request_id)
    created = stored is None
    if stored is None:
        store.artifacts.put_report(request_id, report.model_dump_json().encode())
    else:
        kept = Report.model_validate_json(stored)
        if kept.artifact.sha256 != sha256:
            raise ConflictError(
                f"request {request_id} is recorded with artifact {kept.artifact.sha256}, not {sha256}; "
                "the same request and algorithm version give the same bytes: check the report's provenance",
                ("artifact", "sha256"),
            )
    return RecordedReport(id=request_id, sha256=sha256, recorded_at=now(), location=location), created


def _check_own_report(store: JobStore, report: Report) -> None:
    """Refuse `report` unless it equals the server's own for its job; the record then holds the
    server's bytes, so a report posted before the job ran never outlives the job either."""
    request_id = report.provenance.request_id
    state = store.records.load(request_id).state
    if state != "succeeded":
        raise JobNotReadyError(
            f"request {request_id} is a job of this server ({state}): the server records its own report when the "
            f"job succeeds, at GET /v1/reports/{request_id}",
            ("provenance", "request_id"),
        )
    own = load_report(store, request_id)
    own_json = own.model_dump_json()
    if report.model_dump_json() != own_json:
        where = _first_difference(report.model_dump(mode="json"), own.model_dump(mode="json"), ())
        field = ".".join(map(str, where)) or "the report"
        raise ConflictError(
            f"this server ran request {request_id} and its report differs from the one sent at {field}; "
            f"GET /v1/reports/{request_id} answers the server's own",
            where,
        )
    stored = store.artifacts.get_report(request_id)
    if stored is not None and stored != own_json.encode():
        store.artifacts.put_report(request_id, own_json.encode())


def _first_difference(sent: object, own: object, path: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The path of the first value in which two JSON trees differ; () when they are equal (NaN
    equals NaN here: a report's non-finite statistics are values, not errors)."""
    if isinstance(sent, dict) and isinstance(own, dict):
        for key in [*own, *(k for k in sent if k not in own)]:
            if key not in sent or key not in own:
                return (*path, key)
            if found := _first_difference(sent[key], own[key], (*path, key)):
                return found
        return ()
    if isinstance(sent, list) and isinstance(own, list):
        if len(sent) != len(own):
            return path
        for i, (a, b) in enumerate(zip(sent, own, strict=True)):
            if found := _first_difference(a, b, (*path, i)):
                return found
        return ()
    same = sent == own or (isinstance(sent, float) and isinstance(own, float) and sent != sent and own != own)
    return () if same else path


def recorded_report(store: JobStore, request_id: str) -> Report:
    """The report kept for `request_id`: for a request this server has a job for, the job's own
    report (JobNotReadyError or JobFailedError, 409, until it succeeded), so no report posted
    earlier can stand in for it; else the one posted (JobNotFoundError, 404, when none was)."""
    if store.records.exists(request_id):
        return load_report(store, request_id)
    stored = store.artifacts.get_report(request_id)
    if stored is None:
        raise JobNotFoundError(f"no report recorded for {request_id}; POST it to /v1/reports", ("id",))
    return Report.model_validate_json(stored)
