"""The error body every non-2xx response carries: {"error": {"type", "message", "loc"}}."""

from __future__ import annotations

from pydantic import Field

from initium.schemas._base import WireModel


class ErrorInfo(WireModel):
    type: str = Field(description="machine-readable kind, e.g. 'validation_error', 'not_found'")
    message: str = Field(description="what is wrong and how to fix it")
    loc: list[str | int] = Field(default_factory=list, description="JSON path of the offending field")


class ErrorBody(WireModel):
    error: ErrorInfo
