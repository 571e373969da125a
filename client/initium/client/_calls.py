"""The API's calls, free of I/O: what to send, how to read the answer, and its errors as exceptions.

Client and AsyncClient send the same Call objects; they differ only in how they send and sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from initium.client._errors import APIConnectionError, status_error
from initium.client._request import RequestLike, build_request
from initium.schemas.catalog import PresetList, SchemeInfo, SchemeList
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import RecordedReport, Report

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: the method, the path, the JSON body and how to read a successful answer.

    `content` is a body already encoded as JSON, for a model whose floats may not be finite (a report
    of an overflowed tensor): httpx's `json=` refuses NaN and Infinity, pydantic writes them as tokens.
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    content: bytes | None = None

    def send_args(self, headers: dict[str, str]) -> dict[str, Any]:
        """The keyword arguments for httpx's request(): the body and the headers."""
        if self.content is None:
            return {"json": self.json, "headers": headers}
        return {"content": self.content, "headers": {**headers, "content-type": "application/json"}}


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def parse(call: Call[T], response: httpx.Response) -> T:
    raise_for_status(response)
    return call.parse(response)


def raise_for_status(response: httpx.Response) -> None:
    """The typed exception of an error response (its body must have been read)."""
    if response.status_code >= 400:
        raise status_error(response.status_code, response_body(response), response.headers.get("retry-after"))


def response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def connection_error(base_url: str, exc: httpx.TransportError) -> APIConnectionError:
    return APIConnectionError(f"cannot reach initium at {base_url}: {type(exc).__name__}: {exc}")


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate(response.json())


def _text(response: httpx.Response) -> str:
    return response.text


def plan_call(request: RequestLike | None = None, **parts: Any) -> Call[Plan]:
    """The dry run. A plan past the server's INITIUM_MAX_PLAN_INLINE_BYTES comes streamed as an
    attachment, with the same JSON: parsed from the bytes in one pass (no dict of it in between)."""
    body = build_request(request, **parts).model_dump(mode="json")
    return Call("POST", "/v1/plans", lambda response: Plan.model_validate_json(response.content), body)


def submit_call(request: RequestLike | None = None, **parts: Any) -> Call[JobStatus]:
    body = build_request(request, **parts).model_dump(mode="json")
    return Call("POST", "/v1/initializations", _model(JobStatus), body)


def status_call(job_id: str) -> Call[JobStatus]:
    return Call("GET", f"/v1/initializations/{job_id}", _model(JobStatus))


def report_call(job_id: str) -> Call[Report]:
    return Call("GET", f"/v1/initializations/{job_id}/report", _model(Report))


def report_html_call(job_id: str) -> Call[str]:
    return Call("GET", f"/v1/initializations/{job_id}/report.html", _text)


def presets_call() -> Call[list[Preset]]:
    return Call("GET", "/v1/presets", lambda r: PresetList.model_validate(r.json()).presets)


def preset_call(ref: str) -> Call[Preset]:
    return Call("GET", f"/v1/presets/{ref}", _model(Preset))


def publish_preset_call(preset: Preset | Mapping[str, Any]) -> Call[Preset]:
    body = preset.model_dump(mode="json") if isinstance(preset, Preset) else dict(preset)
    return Call("POST", "/v1/presets", _model(Preset), body)


def schemes_call() -> Call[list[SchemeInfo]]:
    return Call("GET", "/v1/schemes", lambda r: SchemeList.model_validate(r.json()).schemes)


def record_report_call(report: Report) -> Call[RecordedReport]:
    return Call("POST", "/v1/reports", _model(RecordedReport), content=report.model_dump_json().encode())
