"""Errors to HTTP in one place: every failure becomes {"error": {"type", "message", "loc"}}."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from initium.schemas.errors import ErrorBody, ErrorInfo
from initium.schemas.locations import NO_INPUT, json_path
from initium.schemas.wording import count
from initium.service import errors as e
from initium.service.api.live import LiveStreamEnded

log = logging.getLogger("initium.api")

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded", 415: "unsupported_media_type"}


# What each error status means on this API, for the OpenAPI document (clients and schemathesis
# check responses against it, so a status a route can return and does not list is a defect).
_MEANING = {
    400: "the body is not valid JSON (type invalid_json: the message gives the line and column), or nests "
    "deeper than the JSON parser allows",
    401: "an API key is required (INITIUM_API_KEY_HASHES is set): send Authorization: Bearer <key>",
    404: "no such job, file, preset or report",
    409: "the job is not finished or failed (types not_ready, job_failed), its report is still being computed "
    "after its weights (type report_pending, Retry-After) or could not be (type report_failed), or the name and "
    "version exist with other content",
    412: "If-Match names no current version of the file (type precondition_failed); the ETag header has it",
    413: "the body or the model is over a configured limit",
    415: "the body is not application/json, or has a Content-Encoding (type unsupported_media_type); "
    "send plain JSON with Content-Type: application/json",
    416: "the Range starts past the end of the file (type range_not_satisfiable); Content-Range gives its size",
    422: "the body does not validate; `loc` names the field",
    500: "a stored artifact no longer matches its recorded sha256",
    503: "the artifact store is unreachable or refusing for now (type store_unavailable), the job records' Redis "
    "is (type records_unavailable), or the API is already planning INITIUM_MAX_CONCURRENT_PLANS requests (type "
    "planning_busy); retry after Retry-After",
    507: "the data volume or the object store has no room for the write (type insufficient_storage); nothing "
    "was kept: retry after Retry-After once space is freed",
}


_ERROR_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def error_responses(*codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the one error body. On an HTML route the errors
    are still JSON, which FastAPI would document as text/html if given the model, hence the $ref."""
    return {
        code: {"description": _MEANING[code], **({"content": _ERROR_JSON} if html else {"model": ErrorBody})}
        for code in (401, *codes)
    }


def body_route_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an idempotent POST: 200 with `model` when the same content is already there
    (the 201/202 is the route's own), and the errors a body can cause; each such POST writes, so a
    full store (507) is among them."""
    return {200: {"model": model}, **error_responses(400, 409, 413, 422, 507)}


# Issue 16: a 10 MB text/plain body came back whole inside a 422. An error quotes at most an excerpt
# of what it was sent, and no message, however it was built, outgrows MAX_MESSAGE.
EXCERPT = 100
MAX_MESSAGE = 2_000


def shorten(text: str, limit: int = EXCERPT) -> str:
    """`text` cut to its first `limit` characters and an ellipsis with its length when longer (for
    inputs quoted in messages: the caller sees which value, never its whole size again)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """repr(value), shortened."""
    return shorten(repr(value), limit)


def _bounded(message: str) -> str:
    # The head says what failed and the tail the fix, so the middle is what goes.
    if len(message) <= MAX_MESSAGE:
        return message
    cut = len(message) - MAX_MESSAGE + 40
    return f"{message[: MAX_MESSAGE * 2 // 3]} … ({cut:,} characters left out) … {message[-(MAX_MESSAGE // 3 - 40) :]}"


def document_json_bodies(app: FastAPI) -> None:
    """Every operation that takes a body lists 415: security.JsonBodies refuses any other media type
    before routing, so no route declares it itself."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            unsupported = {"description": _MEANING[415], "content": _ERROR_JSON}
            for operations in generate().get("paths", {}).values():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("415", unsupported)
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook ("Extending OpenAPI")


def error_response(
    status: int, type_: str, message: str, loc: Sequence[str | int] = (), headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error envelope; the message is bounded (MAX_MESSAGE) and so is each `loc` part."""
    parts = [part if isinstance(part, int) else shorten(part) for part in loc]
    body = ErrorBody(error=ErrorInfo(type=type_, message=_bounded(message), loc=parts))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def describe_validation_error(errors: Sequence[Any], body: Any = None) -> tuple[str, list[str | int]]:
    """The first pydantic error as 'spec.modules[0].in_features: <what> (got <input>)'; `loc` is the
    field's JSON path in `body`, the union tags pydantic adds ('tree', 'linear') left out (issue 18)."""
    first = errors[0]
    loc = list(first["loc"])
    if loc[:1] == ["body"]:
        loc = json_path(loc[1:], body, first.get("input", NO_INPUT), missing=first["type"] == "missing")
    shown = [p if isinstance(p, int) else shorten(str(p)) for p in loc]  # a key can be any size
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in shown).lstrip(".") or "body"
    if first["type"] == "extra_forbidden":
        what = "unknown field; remove it (GET /v1/schemes and the JSON Schema list the allowed fields)"
    elif first["type"] == "missing":
        what = "required field is missing; add it"
    else:
        what = first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)):
            what += f" (got {excerpt(first['input'])})"
    more = f" (and {count(len(errors) - 1, 'more error')})" if len(errors) > 1 else ""
    return f"{path}: {what}{more}", loc


def install_error_handlers(app: FastAPI) -> None:
    data_dir = Path(app.state.settings.data_dir)

    @app.exception_handler(e.InitiumError)
    async def initium_error(request: Request, exc: e.InitiumError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, e.AuthenticationError) else {}
        if exc.retry_after_s is not None:  # e.g. the artifact store is down: the client waits this long
            headers["Retry-After"] = str(exc.retry_after_s)
        # Each error class carries its status (initium.service.errors), so local mode needs no HTTP layer.
        return error_response(exc.status, exc.type, e.without_server_paths(exc.message, data_dir), exc.loc, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0]["type"] == "json_invalid":  # FastAPI's JSONDecodeError: loc is an offset
            return error_response(400, "invalid_json", _json_error(exc.body, errors[0]))
        message, loc = describe_validation_error(errors, exc.body)
        return error_response(422, "validation_error", message, loc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = f"{request.method} {shorten(request.url.path)}: {exc.detail}"
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            kind, message = "invalid_json", _unparsed_body(exc.__cause__)
        # Starlette's own headers stay (405's Allow lists the methods, as RFC 9110 requires).
        return error_response(exc.status_code, kind, message, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, LiveStreamEnded):  # a live body cut short on purpose, logged already
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed unexpectedly; the log has the details")


_SEND_JSON = "send one JSON object, UTF-8 encoded, with Content-Type: application/json"


def _json_error(document: Any, error: dict[str, Any]) -> str:
    """Where the JSON stops parsing, as line and column (1-based) and character offset."""
    offset = error["loc"][-1] if isinstance(error["loc"][-1], int) else 0
    text = document if isinstance(document, str) else ""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    reason = error.get("ctx", {}).get("error", "JSON decode error")
    return f"the body is not valid JSON: {reason} at line {line}, column {column} (character {offset}); {_SEND_JSON}"


def _unparsed_body(cause: BaseException | None) -> str:
    """FastAPI's 400 'There was an error parsing the body', by what the parser raised."""
    if isinstance(cause, RecursionError):
        return f"the body's JSON nests deeper than the parser allows (a spec: INITIUM_MAX_DEPTH levels); {_SEND_JSON}"
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8: byte {cause.object[cause.start]:#04x} at offset {cause.start}; {_SEND_JSON}"
    return f"the body could not be parsed as JSON; {_SEND_JSON}"
