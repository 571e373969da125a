"""The client's exceptions, one tree, mapped from the service's error body and status.

InitiumError
+-- APIConnectionError       the server could not be reached
+-- APIStatusError           the server answered with an error body (status_code, type, loc)
|   +-- RequestInvalidError      422: the spec or policy is wrong; `loc` points at the field
|   +-- RequestTooLargeError     413: over a server limit
|   +-- NotFoundError            404: unknown job id
|   +-- ConflictError            409: the job has no artifact (yet, or ever)
|   +-- ServerError              5xx
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
    def __init__(self, status_code: int, type_: str, message: str, loc: list[str | int], body: Any = None) -> None:
        where = f" at {'.'.join(str(p) for p in loc)}" if loc else ""
        super().__init__(f"{status_code} {type_}{where}: {message}")
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.loc = loc
        self.body = body


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
    413: RequestTooLargeError,
    422: RequestInvalidError,
    404: NotFoundError,
    409: ConflictError,
}


def status_error(status_code: int, body: Any) -> APIStatusError:
    """The typed exception for an error response; tolerant of bodies that are not ours (a proxy's)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"type": "http_error", "message": str(body)[:500], "loc": []}
    cls = ServerError if status_code >= 500 else _BY_STATUS.get(status_code, APIStatusError)
    return cls(status_code, str(error.get("type")), str(error.get("message")), list(error.get("loc") or []), body)
