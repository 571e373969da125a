"""/v1/reports: reports kept for the record, e.g. of initializations done in a client's local mode."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from initium.schemas.errors import ErrorBody
from initium.schemas.report import RecordedReport, Report
from initium.service.deps import StoreDep
from initium.service.errors import ConflictError, JobNotFoundError
from initium.service.store import atomic_write, now

router = APIRouter(prefix="/v1/reports", tags=["reports"])
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (404, 409, 413, 422)}


@router.post("", status_code=201, response_model=RecordedReport, responses={200: {"model": RecordedReport}, **_ERRORS})
def record(report: Report, response: Response, store: StoreDep) -> RecordedReport:
    """Keep a report under its request id: 201 when new, 200 when this report's artifact is already
    recorded, 409 when the id is recorded with another artifact (the same request cannot give two)."""
    request_id, sha256 = report.provenance.request_id, report.artifact.sha256
    path = store.report_path(request_id)
    location = f"/v1/reports/{request_id}"
    if path.exists():
        kept = Report.model_validate_json(path.read_bytes())
        if kept.artifact.sha256 != sha256:
            raise ConflictError(
                f"request {request_id} is recorded with artifact {kept.artifact.sha256}, not {sha256}; "
                "the same request and algorithm version give the same bytes",
                ("artifact", "sha256"),
            )
        response.status_code = 200
    else:
        atomic_write(path, report.model_dump_json().encode())
    response.headers["Location"] = location
    return RecordedReport(id=request_id, sha256=sha256, recorded_at=now(), location=location)


@router.get("/{request_id}", response_model=Report, responses=_ERRORS)
def recorded(request_id: str, store: StoreDep) -> Report:
    path = store.report_path(request_id)
    if not path.exists():
        raise JobNotFoundError(f"no report recorded for {request_id}; POST it to /v1/reports", ("id",))
    return Report.model_validate_json(path.read_bytes())
