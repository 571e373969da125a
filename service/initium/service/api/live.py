"""The weights while the job is still writing them: GET /v1/initializations/{id}/weights?live=1 (issue 17).

The safetensors header depends only on the plan, and the worker writes the tensors in file order, so
the file's bytes can flow to the client as they reach the store. The answer is a 200 whose
Content-Length is the planned file size (8 + header + data, plan.output.HeaderSizer) and whose body
follows the attempt's temporary file as it grows (see [Note: live files] in write.live): read what is
there, wait `POLL_S`, read again. No ETag: the sha256 is known only at the end, so the client hashes
as it receives and checks the job's final sha256 before its file appears.

The body ends early (the connection closes short of Content-Length, so the client sees a short body
and resumes from the finished file) when the job fails, or when no byte arrived for `idle_s` while
the job was not running (INITIUM_LIVE_IDLE_S: a job still queued, a worker that died and whose job
went back to the queue). An attempt that dies and is retried
within that time is followed on: a new attempt's file has the same bytes, so the body continues
from the same offset. Only the local store can be followed (a shared POSIX volume too); S3, sharded
output and a job already finished or failed get the ordinary answer (the file with its ETag, or 409).

Bounds: the body holds at most one read chunk (write.artifacts.READ_CHUNK), handed to the server in
slices (api.connections.BoundedWrites), and waits with asyncio.sleep, not in a thread: a stalled or
slow client holds its connection and one chunk, never the worker (which writes its file regardless)
nor a thread of the API's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio.to_thread
from fastapi import Response
from fastapi.responses import StreamingResponse

from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.plan.output import HeaderSizer, provenance_metadata
from initium.service.write.artifacts import READ_CHUNK, live_candidates

POLL_S = 0.01  # how often an idle stream looks for new bytes: a tensor's write shows within 10 ms
CHECK_S = 0.25  # how often an idle stream reads the job's record (a failed job ends the stream)


class LiveStreamEnded(Exception):
    """A live body ends short of its Content-Length; the server closes the connection (uvicorn logs it)."""


def live_weights(store: JobStore, job_id: str, idle_s: float) -> Response | None:
    """The live answer for a job still queued or running whose single file sits in the local store;
    None when the ordinary answer applies (finished, failed, sharded, another store). Raises
    JobNotFoundError for an unknown job."""
    if store.records.load(job_id).state not in ("queued", "running"):
        return None
    candidates = live_candidates(store.artifacts, job_id, WEIGHTS)
    size = planned_size(store, job_id) if candidates is not None else None
    if candidates is None or size is None:
        return None
    fields = {
        "Content-Length": str(size),
        "Cache-Control": "no-store",  # the same URL answers with the finished file later
        "Content-Disposition": f'attachment; filename="{job_id[:16]}.safetensors"',
        "X-Initium-Live": "1",
    }
    body = follow(candidates, size, lambda: _state(store, job_id), idle_s)
    return StreamingResponse(body, media_type="application/octet-stream", headers=fields)


def planned_size(store: JobStore, job_id: str) -> int | None:
    """Bytes of the job's single weights file as it will be written (8-byte length prefix, header
    padded to 8, data), from its stored plan; None for sharded output."""
    request = store.records.load_request(job_id)
    plan = store.records.load_plan(job_id)
    if request.output.format != "single" or len(plan.shards) != 1:
        return None
    by_name = {t.name: t for t in plan.tensors}
    tensors = [by_name[name] for name in plan.shards[0].tensors]
    header = HeaderSizer(tensors, provenance_metadata(plan.request_id, request.seed)).size(range(len(tensors)))
    return 8 + header + plan.shards[0].bytes


def _state(store: JobStore, job_id: str) -> str:
    return store.records.load(job_id).state


async def follow(
    candidates: Callable[[], list[Path]], size: int, state: Callable[[], str], idle_s: float
) -> AsyncIterator[bytes]:
    """Bytes [0, size) of a file being written, as they appear, from the first of `candidates()` that
    opens (write.artifacts.live_candidates: the committed file, else the newest attempt's temporary
    file; a newer attempt's file has the same bytes at the same offsets). Raises LiveStreamEnded
    when the job fails (`state()`, read every CHECK_S while no byte comes) or nothing new arrived
    for `idle_s` seconds while the job was not running (queued: waiting for a worker, or for the
    next attempt after one died). A running job may pause for as long as a tensor takes to draw."""
    source = _Source(candidates)
    sent, progressed, checked = 0, time.monotonic(), 0.0
    try:
        while sent < size:
            chunk = await anyio.to_thread.run_sync(source.read, sent, min(READ_CHUNK, size - sent))
            if chunk:
                sent += len(chunk)
                progressed = time.monotonic()
                yield chunk
                continue
            now = time.monotonic()
            if now - progressed > idle_s:
                raise LiveStreamEnded(
                    f"no new bytes of the weights for {idle_s:g} s (INITIUM_LIVE_IDLE_S) after {sent:,} of {size:,}; "
                    "the client waits for the job and resumes from the finished file"
                )
            if now - checked > CHECK_S:
                checked = now
                current = await anyio.to_thread.run_sync(state)
                if current == "failed":
                    raise LiveStreamEnded(f"the job failed after {sent:,} of {size:,} bytes were streamed")
                if current == "running":
                    progressed = now  # a worker holds the job: it draws the next tensor
            source.refresh()
            await asyncio.sleep(POLL_S)
    finally:
        source.close()


class _Source:
    """An open descriptor on the first of `candidates()` that opens; refresh() switches only to
    another file (by inode)."""

    def __init__(self, candidates: Callable[[], list[Path]]) -> None:
        self.candidates = candidates
        self.fd: int | None = None
        self.inode: tuple[int, int] | None = None

    def read(self, offset: int, count: int) -> bytes:
        if self.fd is None:
            self.refresh()
        return os.pread(self.fd, count, offset) if self.fd is not None else b""

    def refresh(self) -> None:
        for candidate in self.candidates():
            try:
                fd = os.open(candidate, os.O_RDONLY)
            except OSError:
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == self.inode:
                os.close(fd)
                return
            self.close()
            self.fd, self.inode = fd, (st.st_dev, st.st_ino)
            return

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = self.inode = None
