"""/v1/initializations: submit a request, poll its job, fetch the weights and the report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse, HTMLResponse

from initium.schemas.job import JobStatus
from initium.schemas.report import Report
from initium.schemas.request import InitRequest
from initium.service import jobs
from initium.service.deps import DispatcherDep, LimitsDep, MetricsDep, PresetsDep, StoreDep, VerifiedDep
from initium.service.http import error_responses
from initium.service.report_html import render_report

router = APIRouter(prefix="/v1/initializations", tags=["initializations"])
# 200 when the same content is already there (the repeat of an idempotent POST).
_BODY_ROUTE = {200: {"model": JobStatus}, **error_responses(400, 409, 413, 422)}
# Malformed ids are unknown ids (404 from the store), not a validation problem of the caller's body.
JobId = Annotated[str, Path(description="sha256 of the normalized request: 64 lowercase hex digits")]
_LOOKUP = error_responses(404, 409)


class ArtifactResponse(FileResponse):
    """Starlette reads a file in 64 KiB pieces, each a hop to a worker thread; at 1 MiB a GPT-2 file
    (475 MiB) is 475 hops instead of 7,600, and loopback downloads run about twice as fast."""

    chunk_size = 1 << 20


_FILES = error_responses(404, 409, 500)


@router.post("", status_code=202, response_model=JobStatus, responses=_BODY_ROUTE)
def submit(
    request: InitRequest,
    response: Response,
    store: StoreDep,
    limits: LimitsDep,
    metrics: MetricsDep,
    presets: PresetsDep,
    dispatcher: DispatcherDep,
) -> JobStatus:
    """Validate, plan and enqueue; 202 while the job is pending, 200 when this request is already done."""
    submission = jobs.submit(store, request, limits, presets)
    if submission.created:
        jobs.dispatch(dispatcher, submission.status.id)
    state = submission.status.state
    metrics.submissions.labels("created" if submission.created else f"existing_{state}").inc()
    if not submission.created and state == "succeeded":
        metrics.cache_hits.inc()
    response.status_code = 200 if state == "succeeded" else 202
    response.headers["Location"] = submission.status.links.self
    return submission.status


@router.get("/{job_id}", response_model=JobStatus, responses=error_responses(404))
def status(job_id: JobId, store: StoreDep) -> JobStatus:
    """State (queued, running, succeeded, failed), progress, error and links."""
    return jobs.to_status(store.load(job_id))


@router.get("/{job_id}/weights", response_class=ArtifactResponse, responses=_FILES)
def weights(job_id: JobId, store: StoreDep, verified: VerifiedDep) -> ArtifactResponse:
    """The safetensors file, checked against its sha256; supports Range and If-Range; the ETag is the sha256."""
    path, sha256 = jobs.weights_path_and_sha(store, job_id, verified)
    headers = {"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"}
    return ArtifactResponse(
        path, media_type="application/octet-stream", filename=f"{job_id[:16]}.safetensors", headers=headers
    )


@router.get("/{job_id}/files/{name}", response_class=ArtifactResponse, responses=_FILES)
def file(job_id: JobId, name: str, store: StoreDep, verified: VerifiedDep) -> ArtifactResponse:
    """One written file (a shard or the shard index) by the name the job status lists; Range and ETag."""
    path, sha256 = jobs.file_path_and_sha(store, job_id, name, verified)
    headers = {"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"}
    media = "application/json" if name.endswith(".json") else "application/octet-stream"
    return ArtifactResponse(path, media_type=media, filename=name, headers=headers)


@router.get("/{job_id}/report", response_model=Report, responses=_LOOKUP)
def report(job_id: JobId, store: StoreDep) -> Report:
    """Per-tensor expected vs measured statistics, totals and provenance."""
    return jobs.load_report(store, job_id)


@router.get("/{job_id}/report.html", response_class=HTMLResponse, responses=error_responses(404, 409, html=True))
def report_html(job_id: JobId, store: StoreDep) -> HTMLResponse:
    """The same report as a self-contained page."""
    return HTMLResponse(render_report(jobs.load_report(store, job_id)))
