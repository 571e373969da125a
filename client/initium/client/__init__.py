"""initium client: request initialized weights from an initium service and load them."""

from typing import Any

from initium.client._async import AsyncClient
from initium.client._client import Client
from initium.client._errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    ConflictError,
    InitiumError,
    IntegrityError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    NotReadyError,
    RateLimitError,
    ReportFailedError,
    ReportPendingError,
    RequestInvalidError,
    RequestTimeoutError,
    RequestTooLargeError,
    ServerError,
)
from initium.client._request import build_request
from initium.client._result import InitResult
from initium.client._retry import RetryPolicy


def spec_from_module(*args: Any, **kwargs: Any) -> Any:
    """See initium.client._torch.spec_from_module (imports torch on first use)."""
    from initium.client._torch import spec_from_module as describe

    return describe(*args, **kwargs)


def initialize_(*args: Any, **kwargs: Any) -> Any:
    """See initium.client._inplace.initialize_: init a module in place, in this process, with the
    service's values (imports torch and the service on first use)."""
    from initium.client._inplace import initialize_ as fill

    return fill(*args, **kwargs)


def shard_slices(*args: Any, **kwargs: Any) -> Any:
    """See initium.client._torch.shard_slices: one tensor-parallel rank's `slices`."""
    from initium.client._torch import shard_slices as slices

    return slices(*args, **kwargs)


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "InitResult",
    "InitiumError",
    "IntegrityError",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "NotReadyError",
    "RateLimitError",
    "ReportFailedError",
    "ReportPendingError",
    "RequestInvalidError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RetryPolicy",
    "ServerError",
    "build_request",
    "initialize_",
    "shard_slices",
    "spec_from_module",
]
