"""The service's error tree; each class carries the HTTP status it answers with (api/http.py sends it).

InitiumError                 anything else the service raises on purpose (500)
+-- AuthenticationError      no or a wrong API key (401)
+-- RequestInvalidError      the spec or policy cannot be planned (422)
+-- LimitExceededError       the request is larger than this server allows (413)
+-- JobNotFoundError         no job has this id (404)
+-- PresetNotFoundError      GET /v1/presets/{ref} names no preset (404)
+-- JobNotReadyError         the job has no artifact yet (409)
|   +-- ReportPendingError       the job's weights are served, its report is still being computed (409, Retry-After)
+-- ReportFailedError        the job's report could not be computed; its weights stand (409)
+-- JobFailedError           the job failed; its artifact will never exist (409)
+-- ConflictError            a name and version exist with other content (409)
+-- ArtifactCorruptError     a stored file no longer matches its sha256 (500)
+-- StoreUnavailableError    the artifact store cannot be reached or refuses for now (503, Retry-After)
|   +-- RecordsUnavailableError  the job records' Redis (under Celery) cannot be reached (503, Retry-After)
+-- InsufficientStorageError the data volume or the object store has no room for a write (507, Retry-After)
+-- PlanningBusyError        every planning slot (INITIUM_MAX_CONCURRENT_PLANS) stayed taken (503, Retry-After)

The status lives here, not in the HTTP layer, so local mode (initium.service.pipeline.local) raises
the client's errors exactly as the API would answer without importing fastapi.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path


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


class ReportPendingError(JobNotReadyError):
    """The job succeeded (its weights are served) and its report is computed after them (issue 17)."""

    type = "report_pending"
    retry_after_s = 1


class ReportFailedError(InitiumError):
    """The report could not be computed; the weights are unaffected, and resubmitting the request
    computes the report again."""

    type = "report_failed"
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


class RecordsUnavailableError(StoreUnavailableError):
    """The job records' store (Redis, under Celery: INITIUM_BROKER_URL) is unreachable, times out or
    is still loading its data; `reason` is the redis-py exception's name (ConnectionError,
    TimeoutError, BusyLoadingError). A StoreUnavailableError, so whatever waits out a store that is
    down (eviction, readiness) waits this out too. Nothing was lost: the same call succeeds once
    Redis is back (issue 16)."""

    type = "records_unavailable"


class InsufficientStorageError(InitiumError):
    """The store has no room for a write (RFC 4918's 507 Insufficient Storage): the data volume is out
    of space or over a quota, or the object store refused the write for space (MinIO's
    XMinioStorageFull, a bucket quota). `reason` is the short cause readiness reports (ENOSPC, EDQUOT,
    XMinioStorageFull, ...). The message says what is full and the fix, never a server path. Nothing
    partial was kept: the same call succeeds once space is freed. Retry-After is eviction's default
    round (INITIUM_EVICT_INTERVAL_S, 60 s): the soonest the service frees space by itself."""

    type = "insufficient_storage"
    status = 507
    retry_after_s = 60

    def __init__(self, message: str, loc: Sequence[str | int] = (), reason: str = "full") -> None:
        super().__init__(message, loc)
        self.reason = reason


class PlanningBusyError(InitiumError):
    """Every planning slot stayed taken for as long as a request waits for one (api.capacity): the
    API plans at most INITIUM_MAX_CONCURRENT_PLANS requests at once, bounding planning's memory and
    CPU (issue 16). Nothing was done: the same request succeeds once a slot is free. Retry-After is
    a few seconds: a slot frees when a plan finishes (the largest the defaults allow take 11-25 s,
    most milliseconds)."""

    type = "planning_busy"
    status = 503
    retry_after_s = 5


# errno values that say the volume cannot take the bytes: no space left, a quota reached, a file
# larger than the volume (or RLIMIT_FSIZE) allows. Freeing space cures them; waiting alone does not.
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def volume_full_as_507(what: str) -> Iterator[None]:
    """Inside: an OSError in STORAGE_FULL_ERRNOS raises InsufficientStorageError saying that the data
    volume (INITIUM_DATA_DIR) has no room for `what` (e.g. "the job's records"), with the fix; the
    OSError, with its path, stays the cause, for the log only. Any other OSError passes as it is."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_FULL_ERRNOS:
            raise
        code = errno.errorcode[exc.errno]
        raise InsufficientStorageError(
            f"the data volume (INITIUM_DATA_DIR) has no room for {what}: {os.strerror(exc.errno)} ({code}); "
            "free space on it, or set INITIUM_STORE_MAX_BYTES so that eviction keeps finished jobs within a "
            "size; nothing partial was kept: retry once there is space",
            reason=code,
        ) from exc


def without_server_paths(message: str, data_dir: Path) -> str:
    """`message` with the data directory's absolute spellings replaced by <INITIUM_DATA_DIR>: a
    message built from an OSError or a store path would show a caller the server's files (issue 16);
    the fix it gives names the setting instead."""
    spellings = {str(data_dir.absolute()), str(data_dir.resolve())} - {"/", ""}
    for path in sorted(spellings, key=len, reverse=True):  # longest first: one may contain the other
        message = message.replace(path, "<INITIUM_DATA_DIR>")
    return message
