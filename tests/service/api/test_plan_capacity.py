"""Issue 16 items 8 and 10: the API plans at most INITIUM_MAX_CONCURRENT_PLANS requests at once, a
plan download holds a file, not the plan, while its client stalls, and a request head past
INITIUM_MAX_HEADER_BYTES is refused even when it arrives whole."""

from __future__ import annotations

import json
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.schemas import InitRequest
from initium.schemas.plan import Plan
from initium.service.api.app import create_app
from initium.service.api.capacity import PlanSlots
from initium.service.api.routes import plans
from initium.service.config import Settings
from initium.service.errors import PlanningBusyError
from initium.service.plan.planner import make_plan
from tests.conftest import uvicorn_in_thread
from tests.service.api.test_plan_bounds import _tiny_linears


def test_slots_admit_count_holders_and_refuse_the_next_after_the_wait() -> None:
    slots = PlanSlots(2, wait_s=0.1)
    with slots.held(), slots.held():
        started = time.perf_counter()
        busy = pytest.raises(PlanningBusyError, match=r"planning 2 requests.*\(INITIUM_MAX_CONCURRENT_PLANS\)")
        with busy, slots.held():
            pass
        assert 0.1 <= time.perf_counter() - started < 1
    with slots.held(), slots.held():  # both given back, also by the block that raised
        pass


def test_a_slot_freed_while_waiting_is_taken() -> None:
    slots = PlanSlots(1, wait_s=5)
    holding = threading.Event()

    def hold() -> None:
        with slots.held():
            holding.set()
            time.sleep(0.2)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    started = time.perf_counter()
    with slots.held():  # waits for the holder, well within wait_s
        assert 0.1 < time.perf_counter() - started < 2
    holder.join()


@pytest.fixture
def busy_api(tmp_path: Path) -> Iterator[tuple[TestClient, PlanSlots]]:
    app = create_app(Settings(data_dir=tmp_path, embedded_worker=False, max_concurrent_plans=1))
    app.state.plan_slots = PlanSlots(1, wait_s=0.2)
    with TestClient(app) as client:
        yield client, app.state.plan_slots


@pytest.mark.parametrize("path", ["/v1/plans", "/v1/initializations"])
def test_without_a_free_slot_planning_is_503_with_retry_after(
    busy_api: tuple[TestClient, PlanSlots], path: str
) -> None:
    api, slots = busy_api
    with slots.held():  # another request is planning
        response = api.post(path, json=_tiny_linears(5))
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    error = response.json()["error"]
    assert error["type"] == "planning_busy" and "INITIUM_MAX_CONCURRENT_PLANS" in error["message"]
    assert api.post(path, json=_tiny_linears(5)).status_code in (200, 202)  # the slot is free again


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    """The real app (no worker) under uvicorn with `initium serve`'s bounds: one planning slot,
    plans past 20 kB as downloads, request heads up to 2048 bytes; yields the port."""
    settings = Settings(data_dir=tmp_path, embedded_worker=False, max_concurrent_plans=1,
                        max_plan_inline_bytes=20_000, max_header_bytes=2048)  # fmt: skip
    app = create_app(settings)
    app.state.plan_slots = PlanSlots(1, wait_s=0.5)
    with uvicorn_in_thread(app, settings) as port:
        yield port


def _post(port: int, body: bytes, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    head = f"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
    sock.settimeout(10)
    return sock


def _read_all(sock: socket.socket, first: bytes = b"") -> bytes:
    answer = first
    while chunk := sock.recv(1 << 20):
        answer += chunk
    return answer


def _dechunked(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's bytes."""
    out, rest = b"", body
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return out
        out, rest = out + rest[:size], rest[size + 2 :]


def test_a_stalled_plan_download_holds_a_file_not_the_plan(
    served: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = served
    made: list[weakref.ref[Plan]] = []

    def tracked(*args: Any) -> Plan:
        plan = make_plan(*args)
        made.append(weakref.ref(plan))
        return plan

    monkeypatch.setattr(plans, "make_plan", tracked)
    request = _tiny_linears(1_000)  # 2,000 tensors: a plan of about a megabyte, 50 times the inline limit
    files_before = sorted(tmp_path.rglob("*"))
    stalled = _post(port, json.dumps(request).encode(), rcvbuf=4096)
    try:
        first = stalled.recv(4096)  # the status line and headers, then the client stops reading
        assert first.startswith(b"HTTP/1.1 200") and b"attachment" in first
        # While it stalls: its plan is gone, its slot free (another plan gets it within the 0.5 s
        # wait), and the file it is read from has no name in the data directory.
        assert made[0]() is None
        with _post(port, json.dumps(_tiny_linears(5)).encode()) as other:
            assert _read_all(other).startswith(b"HTTP/1.1 200")
        assert sorted(tmp_path.rglob("*")) == files_before
        answer = _read_all(stalled, first)
    finally:
        stalled.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert _dechunked(body) == make_plan(InitRequest.model_validate(request)).model_dump_json().encode()


def _head_of(size: int) -> bytes:
    """A complete GET /healthz head of exactly `size` bytes (padded in one header)."""
    start, end = b"GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_a_whole_request_head_past_the_limit_is_431(served: int) -> None:
    """h11 takes a complete head of any size from one read; HeaderLimit counts it to the byte."""
    port = served
    for size, status in ((2048, b"200"), (2049, b"431"), (60_000, b"431")):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(_head_of(size))  # one send: the whole head in one read on loopback
            sock.settimeout(5)
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 " + status), (size, answer[:200])
        if status == b"431":
            head, body = answer.split(b"\r\n\r\n", 1)
            assert b"connection: close" in head.lower()
            error = json.loads(body)["error"]
            assert error["type"] == "header_too_large" and "INITIUM_MAX_HEADER_BYTES" in error["message"]
            assert f"{size:,} bytes" in error["message"]
