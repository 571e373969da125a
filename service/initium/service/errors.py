"""The service's error tree; each class carries the HTTP status it answers with (api/http.py sends it).

InitiumError                 anything else the service raises on purpose (500)
+-- AuthenticationError      no or a wrong API key (401)
+-- RequestInvalidError      the spec or policy cannot be planned (422)
+-- LimitExceededError       the request is larger than this server allows (413)
+-- JobNotFoundError         no job has this id (404)
+-- PresetNotFoundError      GET /v1/presets/{ref} names no preset (404)
+-- JobNotReadyError         the job has no artifact yet (409)
+-- JobFailedError           the job failed; its artifact will never exist (409)
+-- ConflictError            a name and version exist with other content (409)
+-- ArtifactCorruptError     a stored file no longer matches its sha256 (500)
+-- StoreUnavailableError    the artifact store cannot be reached or refuses for now (503, Retry-After)

The status lives here, not in the HTTP layer, so local mode (initium.service.pipeline.local) raises
the client's errors exactly as the API would answer without importing fastapi.
"""

from __future__ import annotations

from collections.abc import Sequence


class InitiumError(Exception):
    """Base of every error the service raises on purpose: `type` names it on the wire, `status` is
    its HTTP status, `loc` the path of the request field at fault (empty when none is)."""

    type = "internal_error"
    status = 500
    retry_after_s: int | None = None  # sent as Retry-After: waiting this long may cure the error

    def __init__(self, message: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = list(loc)


class AuthenticationError(InitiumError):
    type = "unauthorized"
    status = 401


class RequestInvalidError(InitiumError):
    type = "validation_error"
    status = 422


class LimitExceededError(InitiumError):
    type = "limit_exceeded"
    status = 413


class JobNotFoundError(InitiumError):
    type = "not_found"
    status = 404


class PresetNotFoundError(InitiumError):
    """Asked for by its address (GET /v1/presets/{ref}); inside a request an unknown preset is a 422."""

    type = "not_found"
    status = 404


class JobNotReadyError(InitiumError):
    type = "not_ready"
    status = 409


class JobFailedError(InitiumError):
    type = "job_failed"
    status = 409


class ConflictError(InitiumError):
    type = "conflict"
    status = 409


class ArtifactCorruptError(InitiumError):
    type = "artifact_corrupt"
    status = 500


class StoreUnavailableError(InitiumError):
    """The artifact store cannot be reached, times out or refuses for now (S3 down, throttling, its
    bucket gone); `reason` is the short cause (e.g. 'EndpointConnectionError', 'SlowDown') that
    readiness reports. Nothing was lost: the same call succeeds once the store is back."""

    type = "store_unavailable"
    status = 503
    retry_after_s = 5

    def __init__(self, message: str, loc: Sequence[str | int] = (), reason: str = "unavailable") -> None:
        super().__init__(message, loc)
        self.reason = reason
