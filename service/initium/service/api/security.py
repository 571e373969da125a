"""API keys and the request body limit: who may call, and how much they may send.

Keys are never stored: settings hold sha256 digests, a request's key is hashed and compared with
hmac.compare_digest against each, so neither a stored key nor the timing of a comparison leaks it.
The body limit is pure ASGI: it refuses by Content-Length when it can, else counts the bytes as
they stream in, so an oversized body is never buffered whole.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initium.service.api.http import error_response
from initium.service.config import Settings
from initium.service.errors import AuthenticationError


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def require_api_key(request: Request) -> None:
    """A FastAPI dependency: with keys configured, a request needs one (Bearer or X-API-Key)."""
    settings: Settings = request.app.state.settings
    hashes = settings.key_hashes()
    if not hashes:
        return
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    digest = hash_key(key) if key else ""
    # Compare against every digest, so the time taken does not say which (or whether one) matched.
    matched = [hmac.compare_digest(digest, stored) for stored in hashes]
    if not key or not any(matched):
        raise AuthenticationError(
            "a valid API key is required: send 'Authorization: Bearer <key>' (the client reads INITIUM_API_KEY)"
        )


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
