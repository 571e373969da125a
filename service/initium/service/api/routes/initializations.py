"""/v1/initializations: submit a request, poll its job, fetch the weights and the report."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from initium.schemas.job import JobStatus
from initium.schemas.report import Report
from initium.schemas.request import InitRequest
from initium.service.api.conditional import revalidated
from initium.service.api.deps import (
    DispatcherDep,
    LimitsDep,
    MetricsDep,
    PlanSlotsDep,
    PresetsDep,
    StoreDep,
    VerifiedDep,
)
from initium.service.api.downloads import serve_file
from initium.service.api.http import body_route_responses, error_responses
from initium.service.api.live import live_weights
from initium.service.api.report_html import render_pending, render_report
from initium.service.errors import ReportPendingError
from initium.service.jobs import submit as jobs

router = APIRouter(prefix="/v1/initializations", tags=["initializations"])
# Malformed ids are unknown ids (404 from the store), not a validation problem of the caller's body.
JobId = Annotated[str, Path(description="sha256 of the normalized request: 64 lowercase hex digits")]
Live = Annotated[
    bool,
    Query(description="1: while the job is queued or running, stream the single file as the worker writes it "
          "(Content-Length is the planned size, no ETag; the body ends short if the attempt stops or nothing new "
          "arrives for INITIUM_LIVE_IDLE_S); sharded output, an S3 store and a finished job answer as without it"),
]  # fmt: skip
# Errors as JSON beside the files' bytes: the same explicit content an HTML route's errors get; the
# other answers of a download (RFC 9110 sections 13 and 14) and the request fields that choose them.
_FILES: dict[int | str, dict[str, Any]] = {
    206: {"description": "the requested byte range (Content-Range)", "content": {"application/octet-stream": {}}},
    304: {"description": "If-None-Match names the current ETag: the cached copy is current"},
    **error_responses(404, 409, 412, 416, 500, 503, html=True),
}
_CONDITIONS = {
    "Range": "one range, e.g. bytes=1000- (GET only; several ranges or a malformed one: the whole file)",
    "If-Range": "the ETag the range was taken from: another ETag sends the whole file",
    "If-Match": "entity tags or *: 412 unless one is the current ETag (strong comparison)",
    "If-None-Match": "entity tags or *: 304 when one is the current ETag (weak comparison)",
}
_FILE_FIELDS = {
    "parameters": [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": what}
        for name, what in _CONDITIONS.items()
    ]
}

# Stored files stream from the artifact store in 1 MiB pieces (each a hop to a worker thread: at
# Starlette's 64 KiB a loopback GET of GPT-2's 475 MiB took 1.6 s instead of 0.41 s).
# See [Note: downloads stream through the API] in initium.service.api.downloads.


@router.post(
    "", status_code=202, response_model=JobStatus, responses={**body_route_responses(JobStatus), **error_responses(503)}
)
def submit(
    request: InitRequest,
    response: Response,
    store: StoreDep,
    limits: LimitsDep,
    metrics: MetricsDep,
    presets: PresetsDep,
    dispatcher: DispatcherDep,
    slots: PlanSlotsDep,
) -> JobStatus:
    """Validate, plan and enqueue; 202 while the job is pending, 200 when this request is already done.
    At most INITIUM_MAX_CONCURRENT_PLANS requests plan at once (503 with Retry-After when no slot
    frees within a few seconds)."""
    with slots.held():  # until the stored job no longer needs the plan: see [Note: planning slots]
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
    return jobs.to_status(store.records.load(job_id))


class ArtifactResponse(StreamingResponse):
    """What the file routes answer (for the OpenAPI document): bytes, streamed."""

    media_type = "application/octet-stream"


@router.get("/{job_id}/weights", response_class=ArtifactResponse, responses=_FILES, openapi_extra=_FILE_FIELDS)
@router.head("/{job_id}/weights", response_class=ArtifactResponse, responses=_FILES, openapi_extra=_FILE_FIELDS)
def weights(job_id: JobId, request: Request, store: StoreDep, verified: VerifiedDep, live: Live = False) -> Response:
    """The safetensors file, checked against its sha256; the ETag is the sha256; Range, If-Range,
    If-Match, If-None-Match; HEAD for the headers alone. With live=1 while the job is queued or
    running, a GET receives the bytes as the worker writes them (no ETag; see api.live)."""
    if live and request.method == "GET":
        answer = live_weights(store, job_id, request.app.state.settings.live_idle_s, request.app.state.live_streams)
        if answer is not None:
            return answer
    stored = jobs.weights_file(store, job_id, verified)
    filename, media_type = f"{job_id[:16]}.safetensors", "application/octet-stream"
    return serve_file(store.artifacts, stored, request.headers, request.method, filename, media_type)


@router.get("/{job_id}/files/{name}", response_class=ArtifactResponse, responses=_FILES, openapi_extra=_FILE_FIELDS)
@router.head("/{job_id}/files/{name}", response_class=ArtifactResponse, responses=_FILES, openapi_extra=_FILE_FIELDS)
def file(job_id: JobId, name: str, request: Request, store: StoreDep, verified: VerifiedDep) -> Response:
    """One written file (a shard or the shard index) by the name the job status lists; as the weights."""
    stored = jobs.job_file(store, job_id, name, verified)
    media_type = "application/json" if name.endswith(".json") else "application/octet-stream"
    return serve_file(store.artifacts, stored, request.headers, request.method, name, media_type)


# A report is generated from the job's record, so its ETag is the sha256 of the answer's bytes.
_REVALIDATED: dict[int | str, dict[str, Any]] = {304: {"description": "If-None-Match names the current ETag"}}


@router.get(
    "/{job_id}/report", response_model=Report, responses={**_REVALIDATED, **error_responses(404, 409, 412, 503)}
)
def report(job_id: JobId, request: Request, store: StoreDep) -> Response:
    """Per-tensor expected vs measured statistics, totals and provenance; ETag and If-None-Match."""
    content = jobs.load_report(store, job_id).model_dump_json(by_alias=True).encode()
    return revalidated(request.headers, request.method, content, "application/json")


_PENDING_PAGE: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "to a browser (Accept: text/html): the report is still being computed after the weights; "
        "the page says so and reloads itself (a program gets the 409 report_pending)",
        "content": {"text/html": {}},
    }
}


@router.get(
    "/{job_id}/report.html", response_class=HTMLResponse,
    responses={**_REVALIDATED, **_PENDING_PAGE, **error_responses(404, 409, 412, 503, html=True)},
)  # fmt: skip
def report_html(job_id: JobId, request: Request, store: StoreDep) -> Response:
    """The same report as a self-contained page; ETag and If-None-Match. While the report is
    computed after the weights, a browser gets a page saying so that reloads itself (202)."""
    try:
        report = jobs.load_report(store, job_id)
    except ReportPendingError:
        if "text/html" not in request.headers.get("accept", ""):
            raise
        headers = {"Retry-After": "1", "Cache-Control": "no-store"}
        return HTMLResponse(render_pending(job_id), status_code=202, headers=headers)
    content = render_report(report).encode()
    return revalidated(request.headers, request.method, content, "text/html; charset=utf-8")
