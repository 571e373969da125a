"""initium client: request initialized weights from an initium service and load them."""

from initium.client._client import Client, build_request
from initium.client._errors import (
    APIConnectionError,
    APIStatusError,
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

__all__ = [
    "APIConnectionError",
    "APIStatusError",
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
]
