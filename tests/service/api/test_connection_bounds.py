"""What one `initium serve` process holds open (issue 16 item 10): the uvicorn bounds its settings
give (connections, keep-alive, request head) on the real app, and bounded writes of response bodies."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from initium.service.api.app import create_app
from initium.service.api.connections import SLICE_BYTES, BoundedWrites
from initium.service.api.protocol import JsonErrorH11Protocol
from initium.service.cli import server_bounds
from initium.service.config import Settings
from tests.conftest import uvicorn_in_thread


def test_bounded_writes_send_the_same_bytes_in_slices() -> None:
    body = bytes(range(256)) * 4097  # 1 MiB + 256 bytes: not a multiple of the slice
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        await send({"type": "http.response.body", "body": b"tail", "more_body": False})

    async def record(message: Message) -> None:
        sent.append(message)

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    asyncio.run(BoundedWrites(app)({"type": "http"}, nothing, record))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == body + b"tail"
    assert max(len(m["body"]) for m in bodies) == SLICE_BYTES and len(bodies) == -(-len(body) // SLICE_BYTES) + 1
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real app (no worker) under uvicorn with `initium serve`'s bounds, small; yields the port."""
    data: Path = tmp_path_factory.mktemp("bounds")
    settings = Settings(data_dir=data, embedded_worker=False, max_connections=3, keep_alive_s=1,
                        max_header_bytes=2048)  # fmt: skip
    with uvicorn_in_thread(create_app(settings), settings) as port:
        yield port


def _ask(sock: socket.socket, head: bytes) -> bytes:
    sock.sendall(head)
    sock.settimeout(5)
    return sock.recv(65536)


def test_settings_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (
        ("MAX_CONNECTIONS", "7"),
        ("KEEP_ALIVE_S", "3"),
        ("MAX_HEADER_BYTES", "4096"),
        ("BACKLOG", "64"),
    ):
        monkeypatch.setenv(f"INITIUM_{name}", value)
    bounds = server_bounds(Settings())
    assert bounds == {"http": JsonErrorH11Protocol, "limit_concurrency": 7, "timeout_keep_alive": 3,
                      "h11_max_incomplete_event_size": 4096, "backlog": 64}  # fmt: skip


def test_an_unfinished_request_head_past_the_limit_is_refused(bounded: int) -> None:
    """h11 buffers an incomplete head up to max_header_bytes, then answers 400 (the JSON envelope) and closes."""
    with socket.create_connection(("127.0.0.1", bounded)) as sock:
        answer = _ask(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 4096)
        while chunk := sock.recv(65536):  # then the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"connection: close" in answer.lower()
    assert b'"type":"bad_request"' in answer and b"INITIUM_MAX_HEADER_BYTES" in answer


def test_an_idle_keep_alive_connection_is_closed(bounded: int) -> None:
    with socket.create_connection(("127.0.0.1", bounded)) as sock:
        answer = _ask(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        while chunk := sock.recv(65536):  # the rest of the answer, then the server's close
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"}")
        assert 0.5 < time.monotonic() - started < 3  # keep_alive_s=1, not the socket's 5 s timeout


def test_past_max_connections_a_request_gets_503(bounded: int) -> None:
    held = [socket.create_connection(("127.0.0.1", bounded)) for _ in range(3)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", bounded)) as sock:
            assert _ask(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", bounded)) as sock:
        assert _ask(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200")
