"""Failure paths of Client and AsyncClient against a mock transport: every status maps to its typed
exception, retryable ones are retried (with one idempotency key, honouring Retry-After), others
are not, and connection errors are retried then raised."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from initium.client import (
    APIConnectionError,
    APIStatusError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    NotReadyError,
    RateLimitError,
    RequestInvalidError,
    RequestTimeoutError,
    RequestTooLargeError,
    RetryPolicy,
    ServerError,
)
from initium.client._retry import parse_retry_after
from tests.conftest import MLP_REQUEST

STATUS = {"id": "a" * 64, "state": "queued", "created_at": "t", "updated_at": "t", "links": {
    "self": "/s", "weights": "/w", "report": "/r", "report_html": "/h"},
    "progress": {"tensors_done": 0, "tensors_total": 4, "bytes_done": 0, "bytes_total": 10}}  # fmt: skip
# status -> (exception, retried?, error type in the body)
CASES: dict[int, tuple[type[APIStatusError], bool, str]] = {
    400: (APIStatusError, False, "bad_request"),
    401: (AuthenticationError, False, "unauthorized"),
    404: (NotFoundError, False, "not_found"),
    408: (RequestTimeoutError, True, "timeout"),
    409: (ConflictError, False, "conflict"),
    413: (RequestTooLargeError, False, "limit_exceeded"),
    422: (RequestInvalidError, False, "validation_error"),
    429: (RateLimitError, True, "rate_limited"),
    500: (ServerError, True, "internal_error"),
    502: (ServerError, True, "bad_gateway"),
    503: (ServerError, True, "unavailable"),
    504: (ServerError, True, "gateway_timeout"),
}


class Recorder:
    """A mock server: answers `failures` error responses, then success; records every request."""

    def __init__(self, status: int, type_: str, failures: int, headers: dict[str, str] | None = None) -> None:
        self.status, self.type, self.failures, self.headers = status, type_, failures, headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            body = {"error": {"type": self.type, "message": f"a {self.status}", "loc": ["spec"]}}
            return httpx.Response(self.status, json=body, headers=self.headers)
        return httpx.Response(202, json=STATUS)


FAST = RetryPolicy(max_attempts=3, base_s=0.001, cap_s=0.01, rng=random.Random(0))


def sync_submit(handler: Callable[[httpx.Request], httpx.Response], retry: RetryPolicy = FAST) -> Any:
    http = httpx.Client(base_url="http://initium.test", transport=httpx.MockTransport(handler))
    with Client(http_client=http, retry=retry) as client:
        return client.submit(MLP_REQUEST)


def async_submit(handler: Callable[[httpx.Request], httpx.Response], retry: RetryPolicy = FAST) -> Any:
    async def go() -> Any:
        http = httpx.AsyncClient(base_url="http://initium.test", transport=httpx.MockTransport(handler))
        async with AsyncClient(http_client=http, retry=retry) as client:
            return await client.submit(MLP_REQUEST)

    return asyncio.run(go())


SUBMITTERS = pytest.mark.parametrize("submit", [sync_submit, async_submit], ids=["sync", "async"])


@SUBMITTERS
@pytest.mark.parametrize("status", sorted(CASES))
def test_every_status_raises_its_type_and_only_retryable_ones_retry(submit: Any, status: int) -> None:
    cls, retried, type_ = CASES[status]
    always = Recorder(status, type_, failures=99)
    with pytest.raises(cls) as raised:
        submit(always)
    assert type(raised.value) is cls and raised.value.status_code == status and raised.value.loc == ["spec"]
    assert len(always.requests) == (3 if retried else 1)
    if retried:  # and a transient one recovers
        once = Recorder(status, type_, failures=1)
        assert submit(once).id == "a" * 64 and len(once.requests) == 2


@SUBMITTERS
def test_one_idempotency_key_across_the_retries_of_a_call(submit: Any) -> None:
    flaky = Recorder(503, "unavailable", failures=2)
    submit(flaky)
    keys = {r.headers["idempotency-key"] for r in flaky.requests}
    assert len(flaky.requests) == 3 and len(keys) == 1
    again = Recorder(503, "unavailable", failures=0)
    submit(again)
    assert again.requests[0].headers["idempotency-key"] not in keys  # a new call, a new key


@SUBMITTERS
def test_409_not_ready_is_retried_but_a_final_conflict_is_not(submit: Any) -> None:
    waiting = Recorder(409, "not_ready", failures=1)
    assert submit(waiting).state == "queued" and len(waiting.requests) == 2
    with pytest.raises(NotReadyError):
        submit(Recorder(409, "not_ready", failures=99))


@SUBMITTERS
def test_connection_errors_are_retried_then_raised(submit: Any) -> None:
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(APIConnectionError, match="cannot reach initium"):
        submit(refuse)
    assert len(calls) == 3


def test_retry_after_is_honoured_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    sync_submit(Recorder(429, "rate_limited", failures=2, headers={"Retry-After": "7"}), RetryPolicy(cap_s=5.0))
    assert slept == [5.0, 5.0]
    slept.clear()
    sync_submit(Recorder(503, "unavailable", failures=1, headers={"Retry-After": "2"}))
    assert slept == [0.01]  # the hint, capped by FAST's 0.01 s


def test_backoff_is_jittered_exponential_and_capped() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    for attempt in range(1, 8):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= min(8.0, 2 ** (attempt - 1))
        assert max(delays) > 0.5 * min(8.0, 2 ** (attempt - 1))  # spread over the whole range


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INITIUM_BASE_URL", "http://env.test:9000/")
    monkeypatch.setenv("INITIUM_API_KEY", "ik_env")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=STATUS)

    client = Client(retry=FAST)
    assert client.base_url == "http://env.test:9000"
    client._http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(answer),
                                headers=client.settings.headers())  # fmt: skip
    client.submit(MLP_REQUEST)
    assert seen[0].headers["authorization"] == "Bearer ik_env" and str(seen[0].url).startswith("http://env.test:9000")
    assert Client("http://arg.test", api_key="ik_arg").settings.api_key == "ik_arg"
