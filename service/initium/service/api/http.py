"""Errors to HTTP in one place: every failure becomes {"error": {"type", "message", "loc"}}."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from initium.schemas.errors import ErrorBody, ErrorInfo
from initium.service import errors as e

log = logging.getLogger("initium.api")

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded", 415: "unsupported_media_type"}


# What each error status means on this API, for the OpenAPI document (clients and schemathesis
# check responses against it, so a status a route can return and does not list is a defect).
_MEANING = {
    400: "the body is not JSON, or nests deeper than INITIUM_MAX_DEPTH",
    401: "an API key is required (INITIUM_API_KEY_HASHES is set): send Authorization: Bearer <key>",
    404: "no such job, file, preset or report",
    409: "the job is not finished or failed, or the name and version exist with other content",
    413: "the body or the model is over a configured limit",
    422: "the body does not validate; `loc` names the field",
    500: "a stored artifact no longer matches its recorded sha256",
    503: "the artifact store is unreachable or refusing for now (type store_unavailable); retry after Retry-After",
}


def error_responses(*codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the one error body. On an HTML route the errors
    are still JSON, which FastAPI would document as text/html if given the model, hence the $ref."""
    json_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {
        code: {"description": _MEANING[code], **({"content": json_body} if html else {"model": ErrorBody})}
        for code in (401, *codes)
    }


def body_route_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an idempotent POST: 200 with `model` when the same content is already there
    (the 201/202 is the route's own), and the errors a body can cause."""
    return {200: {"model": model}, **error_responses(400, 409, 413, 422)}


def error_response(
    status: int, type_: str, message: str, loc: Sequence[str | int] = (), headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorInfo(type=type_, message=message, loc=list(loc)))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def describe_validation_error(errors: Sequence[Any]) -> tuple[str, list[str | int]]:
    """The first pydantic error as 'spec.modules[0].linear.in_features: <what> (got <input>)'."""
    first = errors[0]
    loc = [part for part in first["loc"] if part != "body"]
    if loc[:1] == ["spec"] and loc[1:2] in (["tree"], ["manifest"]):
        del loc[1]  # the spec form's union tag: not part of the JSON path
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    if first["type"] == "extra_forbidden":
        what = "unknown field; remove it (GET /v1/schemes and the JSON Schema list the allowed fields)"
    elif first["type"] == "missing":
        what = "required field is missing; add it"
    else:
        what = first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)):
            what += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return f"{path}: {what}{more}", loc


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(e.InitiumError)
    async def initium_error(request: Request, exc: e.InitiumError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, e.AuthenticationError) else {}
        if exc.retry_after_s is not None:  # e.g. the artifact store is down: the client waits this long
            headers["Retry-After"] = str(exc.retry_after_s)
        # Each error class carries its status (initium.service.errors), so local mode needs no HTTP layer.
        return error_response(exc.status, exc.type, exc.message, exc.loc, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, loc = describe_validation_error(exc.errors())
        return error_response(422, "validation_error", message, loc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_TYPES.get(exc.status_code, "http_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            kind = "validation_error"
            message = (
                "the body could not be parsed: send JSON, nested no deeper than the spec allows (INITIUM_MAX_DEPTH)"
            )
        # Starlette's own headers stay (405's Allow lists the methods, as RFC 9110 requires).
        return error_response(exc.status_code, kind, message, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed unexpectedly; the log has the details")
