"""/v1/reports: reports kept for the record, e.g. of initializations done in a client's local mode."""

from __future__ import annotations

from fastapi import APIRouter, Response

from initium.schemas.report import RecordedReport, Report
from initium.service.api.deps import StoreDep
from initium.service.api.http import body_route_responses, error_responses
from initium.service.jobs import submit as jobs

router = APIRouter(prefix="/v1/reports", tags=["reports"])


# The reports live in the artifact store: 503 while it is down.
_RECORD = {**body_route_responses(RecordedReport), **error_responses(503)}


@router.post("", status_code=201, response_model=RecordedReport, responses=_RECORD)
def record(report: Report, response: Response, store: StoreDep) -> RecordedReport:
    """Keep a report under its request id: 201 when new, 200 when this report's artifact is already
    recorded, 409 when the id is recorded with another artifact (the same request cannot give two).
    For a request this server ran, only its own report is accepted (200: the server recorded it when
    the job succeeded): 409 naming the first field that differs, or while the job has not succeeded."""
    recorded, created = jobs.record_report(store, report)
    response.status_code = 201 if created else 200
    response.headers["Location"] = recorded.location
    return recorded


@router.get("/{request_id}", response_model=Report, responses=error_responses(404, 409, 503))
def recorded(request_id: str, store: StoreDep) -> Report:
    """A report kept with POST /v1/reports; for a request this server ran, the server's own report
    (409 until its job succeeded), whatever was posted before."""
    return jobs.recorded_report(store, request_id)
