"""What one connection may hold: response bodies handed to the server in bounded slices (issue 16).

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
