"""/v1/initializations: submit a request, poll its job, fetch the weights and the report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse, HTMLResponse

from initium.schemas.job import JobStatus
from initium.schemas.report import Report
from initium.schemas.request import InitRequest
from initium.service.api.deps import DispatcherDep, LimitsDep, MetricsDep, PresetsDep, StoreDep, VerifiedDep
from initium.service.api.http import body_route_responses, error_responses
from initium.service.api.report_html import render_report
from initium.service.jobs import submit as jobs

router = APIRouter(prefix="/v1/initializations", tags=["initializations"])
# Malformed ids are unknown ids (404 from the store), not a validation problem of the caller's body.
JobId = Annotated[str, Path(description="sha256 of the normalized request: 64 lowercase hex digits")]
_LOOKUP = error_responses(404, 409)
_FILES = error_responses(404, 409, 500)


class ArtifactResponse(FileResponse):
    """Starlette reads a file in 64 KiB pieces, each a hop to a worker thread; at 1 MiB a GPT-2 file
    (475 MiB) is 475 hops instead of 7,600: a loopback GET of it took 0.41 s instead of 1.6 s."""

    chunk_size = 1 << 20


def _artifact(path: str, sha256: str, filename: str, media_type: str = "application/octet-stream") -> ArtifactResponse:
    """A stored file with its sha256 as the ETag (Range and If-Range come from Starlette); the URL is
    content-addressed, so its bytes never change."""
    headers = {"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"}
    return ArtifactResponse(path, media_type=media_type, filename=filename, headers=headers)


@router.post("", status_code=202, response_model=JobStatus, responses=body_route_responses(JobStatus))
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
    metrics.observe_submission(submission.created, submission.status.state)
    response.status_code = 200 if submission.status.state == "succeeded" else 202
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
    return _artifact(path, sha256, filename=f"{job_id[:16]}.safetensors")


@router.get("/{job_id}/files/{name}", response_class=ArtifactResponse, responses=_FILES)
def file(job_id: JobId, name: str, store: StoreDep, verified: VerifiedDep) -> ArtifactResponse:
    """One written file (a shard or the shard index) by the name the job status lists; Range and ETag."""
    path, sha256 = jobs.file_path_and_sha(store, job_id, name, verified)
    if name.endswith(".json"):
        return _artifact(path, sha256, filename=name, media_type="application/json")
    return _artifact(path, sha256, filename=name)


@router.get("/{job_id}/report", response_model=Report, responses=_LOOKUP)
def report(job_id: JobId, store: StoreDep) -> Report:
    """Per-tensor expected vs measured statistics, totals and provenance."""
    return jobs.load_report(store, job_id)


@router.get("/{job_id}/report.html", response_class=HTMLResponse, responses=error_responses(404, 409, html=True))
def report_html(job_id: JobId, store: StoreDep) -> HTMLResponse:
    """The same report as a self-contained page."""
    return HTMLResponse(render_report(jobs.load_report(store, job_id)))
