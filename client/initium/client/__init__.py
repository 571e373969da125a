"""initium client: request initialized weights from an initium service and load them."""

from typing import Any

from initium.client._client import Client, build_request
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
    RequestInvalidError,
    RequestTooLargeError,
    ServerError,
)
from initium.client._result import InitResult


def spec_from_module(*args: Any, **kwargs: Any) -> Any:
    """See initium.client._torch.spec_from_module (imports torch on first use)."""
    from initium.client._torch import spec_from_module as describe

    return describe(*args, **kwargs)


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "InitResult",
    "InitiumError",
    "IntegrityError",
    "JobFailedError",
    "JobTimeoutError",
    "NotFoundError",
    "RequestInvalidError",
    "RequestTooLargeError",
    "ServerError",
    "build_request",
    "spec_from_module",
]
