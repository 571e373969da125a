"""Job status on the wire: state, progress, error and links."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from initium.schemas._base import WireModel
from initium.schemas.errors import ErrorInfo

JobState = Literal["queued", "running", "succeeded", "failed"]
# [Note: weights first] A job succeeds once its weights are written and verified; its report is
# computed after them (issue 17), with a state of its own: pending until then, ready once stored,
# failed when it could not be computed (the weights stand; resubmitting the request computes it again).
ReportState = Literal["pending", "ready", "failed"]
TERMINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed")


class Progress(WireModel):
    tensors_done: int
    tensors_total: int
    bytes_done: int
    bytes_total: int


class FileInfo(WireModel):
    """One written file of a job: GET /v1/initializations/{id}/files/{name} serves it."""

    name: str
    sha256: str
    size: int


class Links(WireModel):
    self: str
    weights: str
    report: str
    report_html: str


class JobRecord(WireModel):
    """A job as the store persists it: state, progress, attempts, error and the artifact's sha256."""

    id: str
    state: JobState
    progress: Progress
    error: ErrorInfo | None = None
    sha256: str | None = Field(None, description="of the single file, or of the shard index when sharded")
    size: int | None = None
    files: list[FileInfo] = Field(default_factory=list)
    attempts: int = 0
    worker: str | None = Field(None, description="host:pid of the worker process of the latest attempt")
    report_state: ReportState = Field(
        "pending", description="the report's own state: it is computed after the weights a succeeded job serves"
    )
    report_error: ErrorInfo | None = Field(None, description="why the report could not be computed (state failed)")
    report_attempts: int = Field(0, description="runs at the report since the weights were published")
    created_at: str
    updated_at: str
    finished_at: str | None = Field(None, description="when the job succeeded or failed (its report may come later)")

    @model_validator(mode="before")
    @classmethod
    def _report_of_earlier_records(cls, data: Any) -> Any:
        """A record stored before reports had a state of their own: a succeeded job's report was
        written before its success, so it is ready."""
        if isinstance(data, dict) and "report_state" not in data and data.get("state") == "succeeded":
            return {**data, "report_state": "ready"}
        return data


class JobStatus(JobRecord):
    """A job on the wire: the record plus links to its status, weights and report."""

    links: Links
