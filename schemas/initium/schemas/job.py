"""Job status on the wire: state, progress, error and links."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from initium.schemas._base import WireModel
from initium.schemas.errors import ErrorInfo

JobState = Literal["queued", "running", "succeeded", "failed"]
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
    created_at: str
    updated_at: str


class JobStatus(JobRecord):
    """A job on the wire: the record plus links to its status, weights and report."""

    links: Links
