"""The service's error tree; initium.service.api.http maps each class to a status code in one table.

InitiumError
+-- RequestInvalidError      the spec or policy cannot be planned (422)
+-- LimitExceededError       the request is larger than this server allows (413)
+-- JobNotFoundError         no job has this id (404)
+-- JobNotReadyError         the job has no artifact yet (409)
+-- JobFailedError           the job failed; its artifact will never exist (409)
+-- ArtifactCorruptError     a stored file no longer matches its sha256 (500)
"""

from __future__ import annotations

from collections.abc import Sequence


class InitiumError(Exception):
    """Base of every error the service raises on purpose."""

    type = "internal_error"

    def __init__(self, message: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = list(loc)


class AuthenticationError(InitiumError):
    type = "unauthorized"


class RequestInvalidError(InitiumError):
    type = "validation_error"


class LimitExceededError(InitiumError):
    type = "limit_exceeded"


class JobNotFoundError(InitiumError):
    type = "not_found"


class JobNotReadyError(InitiumError):
    type = "not_ready"


class JobFailedError(InitiumError):
    type = "job_failed"


class ConflictError(InitiumError):
    type = "conflict"


class ArtifactCorruptError(InitiumError):
    type = "artifact_corrupt"
