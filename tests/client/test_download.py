"""Downloads: a connection killed halfway resumes with Range + If-Range to the right sha256; a
server that ignores the range restarts cleanly; a corrupt body never becomes the target file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from initium.client import IntegrityError, RetryPolicy
from initium.client._download import adownload, download
from initium.client._fetch import Fetch

BODY = os.urandom(3 * (1 << 20) + 12345)  # a bit over three 1 MiB chunks
SHA = hashlib.sha256(BODY).hexdigest()
FAST = RetryPolicy(max_attempts=4, base_s=0.001, cap_s=0.01, rng=random.Random(0))


class Breaking(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that dies with a read error after `cut` bytes, as a dropped connection does."""

    def __init__(self, data: bytes, cut: int | None) -> None:
        self.data, self.cut = data, cut

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for i in range(0, len(self.data), 65536):
            chunk = self.data[i : i + 65536]
            if self.cut is not None and sent + len(chunk) > self.cut:
                raise httpx.ReadError("connection reset by peer")
            sent += len(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


class FileServer:
    """Serves BODY with its ETag; honours Range only under a matching If-Range (as Starlette does)."""

    def __init__(self, cuts: list[int | None], honour_range: bool = True, body: bytes = BODY) -> None:
        self.cuts, self.honour_range, self.body = list(cuts), honour_range, body
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        cut = self.cuts.pop(0) if self.cuts else None
        headers = {"ETag": f'"{SHA}"', "Accept-Ranges": "bytes"}
        wanted = request.headers.get("range")
        if wanted and self.honour_range and request.headers.get("if-range") == f'"{SHA}"':
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
            return httpx.Response(206, headers=headers, stream=Breaking(self.body[start:], cut))
        return httpx.Response(200, headers=headers, stream=Breaking(self.body, cut))


def run(server: FileServer, target: Path, mode: str) -> Path:
    transport = httpx.MockTransport(server)
    if mode == "sync":
        with httpx.Client(base_url="http://t", transport=transport) as http:
            return download(http, Fetch("/w", target, SHA, len(BODY)), FAST, progress=False)

    async def go() -> Path:
        async with httpx.AsyncClient(base_url="http://t", transport=transport) as http:
            return await adownload(http, Fetch("/w", target, SHA, len(BODY)), FAST, progress=False)

    return asyncio.run(go())


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
def test_a_download_killed_halfway_resumes_to_the_right_sha256(tmp_path: Path, mode: str) -> None:
    server = FileServer(cuts=[len(BODY) // 2, 1_500_000])  # broken twice, then whole
    path = run(server, tmp_path / "w.safetensors", mode)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA
    first, second, third = server.requests
    assert "range" not in first.headers
    assert second.headers["if-range"] == f'"{SHA}"' and int(second.headers["range"][6:-1]) > 0
    assert int(third.headers["range"][6:-1]) > int(second.headers["range"][6:-1])  # kept what it had
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no part file left


@MODES
def test_a_server_that_ignores_the_range_restarts_the_file(tmp_path: Path, mode: str) -> None:
    server = FileServer(cuts=[len(BODY) // 3], honour_range=False)
    path = run(server, tmp_path / "w.safetensors", mode)
    assert path.read_bytes() == BODY and len(server.requests) == 2


def test_a_part_left_by_an_earlier_process_is_continued(tmp_path: Path) -> None:
    (tmp_path / f".w.safetensors.{SHA[:16]}.part").write_bytes(BODY[:1_000_000])
    server = FileServer(cuts=[])
    run(server, tmp_path / "w.safetensors", "sync")
    assert server.requests[0].headers["range"] == "bytes=1000000-"
    assert (tmp_path / "w.safetensors").read_bytes() == BODY


def test_a_corrupt_body_raises_and_leaves_no_file(tmp_path: Path) -> None:
    bad = bytearray(BODY)
    bad[123] ^= 1
    with pytest.raises(IntegrityError, match="sha256"):
        run(FileServer(cuts=[], body=bytes(bad)), tmp_path / "w.safetensors", "sync")
    assert list(tmp_path.iterdir()) == []
