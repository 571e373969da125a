"""What one connection may hold: response bodies handed to the server in bounded slices, request
heads within INITIUM_MAX_HEADER_BYTES (issue 16).

[Note: stalled downloads] A client that requests a file and never reads keeps its connection's
response stuck in the server's write path. uvicorn applies asyncio flow control (it stops awaiting
`send` once the transport's buffer passes its high-water mark, 64 KiB), but it checks only after
writing a whole message: a 1 MiB chunk is encoded by h11 into a second 1 MiB copy and the part the
kernel did not take is copied into the transport's buffer, so each stalled download held two to
three times the chunk (800 of them took the API from 75 MB to 2.5 GB). Handing the server the same
bytes in slices of `slice_bytes` lets flow control stop it after one slice, so a stalled connection
holds the chunk being sent plus about two slices, and the store keeps reading large chunks (fewer
thread hops: a loopback download stays as fast as with 1 MiB messages).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initium.service.api.http import error_response

SLICE_BYTES = 64 * 1024  # asyncio's default high-water mark for a transport's write buffer


class BoundedWrites:
    """Pure ASGI: every `http.response.body` longer than `slice_bytes` goes to the server as
    consecutive messages of at most `slice_bytes` bytes (the same bytes, in order)."""

    def __init__(self, app: ASGIApp, slice_bytes: int = SLICE_BYTES) -> None:
        self.app, self.slice_bytes = app, slice_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sliced(message: Message) -> None:
            body: bytes = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= self.slice_bytes:
                await send(message)
                return
            view, step = memoryview(body), self.slice_bytes
            for start in range(0, len(body), step):
                last = start + step >= len(body)
                more = message.get("more_body", False) if last else True
                await send({"type": "http.response.body", "body": bytes(view[start : start + step]), "more_body": more})

        await self.app(scope, receive, sliced)


def head_bytes(scope: Scope) -> int:
    """The request line and header fields as HTTP/1.1 sends them: `METHOD target HTTP/x\\r\\n`, each
    `name: value\\r\\n` and the closing `\\r\\n` (bytes). h11 has stripped the optional whitespace
    around values, so this is at most what arrived."""
    target = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    line = len(scope["method"]) + 1 + len(target) + len(" HTTP/") + len(scope.get("http_version", "1.1")) + 2
    fields = sum(len(name) + 2 + len(value) + 2 for name, value in scope["headers"])
    return line + fields + 2


class HeaderLimit:
    """Pure ASGI: 431 Request Header Fields Too Large (RFC 6585), in the JSON error envelope, to a
    request whose line and headers take more than `limit` bytes, and the connection closed.

    uvicorn's h11_max_incomplete_event_size (the same setting, cli.server_bounds) bounds only a head
    that arrives in pieces: h11 takes a complete head of any size from one read (issue 16: 60 KB in
    one send was accepted). This answers whatever the server let through, before any route runs."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = head_bytes(scope) if scope["type"] == "http" else 0
        if size <= self.limit:
            await self.app(scope, receive, send)
            return
        message = (
            f"the request line and headers take {size:,} bytes; this server allows at most {self.limit:,} "
            "(INITIUM_MAX_HEADER_BYTES): send fewer or shorter headers"
        )
        # A body on its way is never read: the connection closes after the answer.
        response = error_response(431, "header_too_large", message, headers={"Connection": "close"})
        await response(scope, receive, send)
