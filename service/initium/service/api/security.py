"""API keys, the body's form and its size: who may call, what they may send and how much, all
decided from the request's headers before a byte of its body is read.

Keys are never stored: settings hold sha256 digests, a request's key is hashed and compared with
hmac.compare_digest against each, so neither a stored key nor the timing of a comparison leaks it.
The gates are pure ASGI middleware, outside FastAPI's body parsing (issue 16: a key was checked only
after a 10 MB body had been read and parsed). The body limit refuses by Content-Length when it can,
else counts the bytes as they stream in, so an oversized body is never buffered whole.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initium.service.api.http import error_response, shorten
from initium.service.errors import AuthenticationError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_accepted(headers: Headers, hashes: Collection[str]) -> bool:
    """Whether the request carries one of the keys (Bearer or X-API-Key) whose digests are `hashes`."""
    header = headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else headers.get("x-api-key", "")
    digest = hash_key(key) if key else ""
    # Compare against every digest, so the time taken does not say which (or whether one) matched.
    matched = [hmac.compare_digest(digest, stored) for stored in hashes]
    return bool(key) and any(matched)


def _has_body(headers: Headers) -> bool:
    return headers.get("content-length", "0").strip() not in ("0", "") or "transfer-encoding" in headers


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, type_: str, message: str,
                  headers: dict[str, str]) -> None:  # fmt: skip
    # A body still on its way is never read: close the connection after the answer rather than drain it.
    if _has_body(Headers(scope=scope)):
        headers = {**headers, "Connection": "close"}
    await error_response(status, type_, message, headers=headers)(scope, receive, send)


class ApiKeyGate:
    """401 for a request without a valid key, when keys are configured, on every path but `open_paths`
    (health, readiness and metrics for the orchestrator and the scraper; the docs when
    INITIUM_PUBLIC_DOCS is set). Closed by default: a route added later needs the key too."""

    def __init__(self, app: ASGIApp, hashes: Collection[str], open_paths: Collection[str]) -> None:
        self.app, self.hashes, self.open_paths = app, list(hashes), frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.hashes or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if key_accepted(Headers(scope=scope), self.hashes):
            await self.app(scope, receive, send)
            return
        refusal = AuthenticationError(
            "a valid API key is required: send 'Authorization: Bearer <key>' (the client reads INITIUM_API_KEY)"
        )
        challenge = {"WWW-Authenticate": "Bearer"}
        await _refuse(scope, receive, send, refusal.status, refusal.type, refusal.message, challenge)


class JsonBodies:
    """415 for a request body that is not plain JSON: a Content-Type other than application/json (or
    a +json type), none at all, or any Content-Encoding but identity (RFC 9110 section 15.5.16; the
    answer's Accept-Encoding: identity says which coding is taken, section 12.5.3).

    Decoding gzip instead would make the body limit a limit on compressed bytes, opening a
    decompression bomb (a 16 MB gzip of zeros inflates past 16 GB); the specs are small and no common
    client compresses request bodies, so nothing is lost by refusing. Every body route of this API
    takes JSON, so the check needs no route: it runs before routing, hence a non-JSON POST to an
    unknown path is a 415 rather than a 404."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if not _has_body(headers):
            await self.app(scope, receive, send)
            return
        encoding = headers.get("content-encoding", "identity").strip().lower()
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        maintype, _, subtype = media_type.partition("/")
        if encoding not in ("identity", ""):
            message = f"the body has Content-Encoding {shorten(encoding, 40)}; send it uncompressed (identity)"
        elif maintype != "application" or not (subtype == "json" or subtype.endswith("+json")):
            sent = f"Content-Type {shorten(media_type, 60)}" if media_type else "no Content-Type"
            message = f"the body has {sent}; send JSON with Content-Type: application/json"
        else:
            await self.app(scope, receive, send)
            return
        await _refuse(scope, receive, send, 415, "unsupported_media_type", message, {"Accept-Encoding": "identity"})


class BodyLimit:
    """413 for bodies over `limit` bytes, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send, int(length))
            return
        seen, too_large = 0, False

        async def counted() -> Message:
            # Past the limit the body ends here; the app's reply is then replaced by the 413 (raising
            # instead would reach the app's body parser and come back as a 400).
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replied(message: Message) -> None:
            if not too_large:
                await send(message)

        await self.app(scope, counted, replied)
        if too_large:
            await self._refuse(scope, receive, send, seen)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        response = error_response(
            413, "limit_exceeded",
            f"the request body has at least {size:,} bytes; the limit is {self.limit:,} (INITIUM_MAX_BODY_BYTES)",
        )  # fmt: skip
        await response(scope, receive, send)
