"""The client's exceptions, one tree, mapped from the service's error body and status.

InitiumError
+-- APIConnectionError       the server could not be reached (retried)
+-- APIStatusError           the server answered with an error body (status_code, type, loc, retry_after)
|   +-- AuthenticationError      401: no or wrong API key
|   +-- NotFoundError            404: unknown job id or preset
|   +-- RequestTimeoutError      408 (retried)
|   +-- ConflictError            409: the job has no artifact, or a preset version differs
|   |   +-- NotReadyError            409 not_ready: the job has not finished yet (retried)
|   |   |   +-- ReportPendingError       409 report_pending: the weights are ready, the report is computed after them
|   |   +-- ReportFailedError        409 report_failed: the report could not be computed (the weights stand)
|   +-- RequestTooLargeError     413: over a server limit
|   +-- RequestInvalidError      422: the spec or policy is wrong; `loc` points at the field
|   +-- RateLimitError           429 (retried, honouring Retry-After)
|   +-- ServerError              5xx (retried)
+-- JobFailedError           the job ran and failed; `.status.error` says why
+-- JobTimeoutError          the job did not finish within the wait timeout
+-- IntegrityError           a download does not match its sha256
"""

from __future__ import annotations

from typing import Any

from initium.schemas.job import JobStatus


class InitiumError(Exception):
    """Base of every error the initium client raises."""


class APIConnectionError(InitiumError):
    pass


class APIStatusError(InitiumError):
    def __init__(
        self, status_code: int, type_: str, message: str, loc: list[str | int], body: Any = None,
        retry_after: str | None = None,
    ) -> None:  # fmt: skip
        where = f" at {'.'.join(str(p) for p in loc)}" if loc else ""
        super().__init__(f"{status_code} {type_}{where}: {message}")
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.loc = loc
        self.body = body
        self.retry_after = retry_after


class AuthenticationError(APIStatusError):
    pass


class RequestInvalidError(APIStatusError):
    pass


class RequestTooLargeError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class NotReadyError(ConflictError):
    pass


class ReportPendingError(NotReadyError):
    """The job's weights are served; its report is still being computed (issue 17). Client.report
    waits it out; Retry-After says when to ask again."""


class ReportFailedError(ConflictError):
    """The job's report could not be computed; its weights are fine. Submitting the request again
    computes the report again."""


class RequestTimeoutError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class ServerError(APIStatusError):
    pass


class JobFailedError(InitiumError):
    def __init__(self, status: JobStatus) -> None:
        reason = status.error.message if status.error else "no reason given"
        super().__init__(f"job {status.id} failed: {reason}")
        self.status = status


class JobTimeoutError(InitiumError):
    pass


class IntegrityError(InitiumError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: RequestInvalidError,
    429: RateLimitError,
}


_CONFLICTS: dict[str, type[APIStatusError]] = {
    "not_ready": NotReadyError,
    "report_pending": ReportPendingError,
    "report_failed": ReportFailedError,
}


def status_error(status_code: int, body: Any, retry_after: str | None = None) -> APIStatusError:
    """The typed exception for an error response; tolerant of bodies that are not ours (a proxy's)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"type": "http_error", "message": str(body)[:500], "loc": []}
    type_ = str(error.get("type"))
    cls = ServerError if status_code >= 500 else _BY_STATUS.get(status_code, APIStatusError)
    if status_code == 409:
        cls = _CONFLICTS.get(type_, cls)
    return cls(status_code, type_, str(error.get("message")), list(error.get("loc") or []), body, retry_after)
