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
nor a thread of the API's pool. Each look for new bytes is one hop to a worker thread (the read, and
when nothing is new the marker and the files looked up again), never a file system call on the event
loop, and an idle stream looks less often the longer it waits (POLL_S doubling up to MAX_POLL_S). At
most INITIUM_MAX_LIVE_STREAMS streams are followed at once (LiveStreams); past it a request gets the
ordinary answer, and the client falls back to waiting. The planned size is read from the stored plan
once per job (a 100,000-tensor plan is hundreds of MB of JSON to parse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

import anyio.to_thread
from fastapi import Response
from fastapi.responses import StreamingResponse

from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.plan.output import HeaderSizer, provenance_metadata
from initium.service.write.artifacts import READ_CHUNK, live_candidates

log = logging.getLogger("initium.api")
POLL_S = 0.01  # how soon an idle stream first looks again for new bytes
MAX_POLL_S = 0.1  # and at the longest, after waiting a while (a tensor's write shows within this)
CHECK_S = 0.25  # how often an idle stream reads the job's record (a failed job ends the stream)


class LiveStreamEnded(Exception):
    """A live body ends short of its Content-Length: raising is how an ASGI app makes the server
    close the connection. It is no fault of the server's: logged once at INFO (QuietShortEnds keeps
    it out of the error log, where it would stand as a traceback per stream)."""


class QuietShortEnds(logging.Filter):
    """Drops the server's "Exception in ASGI application" record of a LiveStreamEnded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], LiveStreamEnded))


QUIET_SHORT_ENDS = QuietShortEnds()  # one instance: addFilter adds it once however often apps are made


class LiveStreams:
    """How many live bodies are being followed, at most `limit` (INITIUM_MAX_LIVE_STREAMS)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int | None] = OrderedDict()  # job id -> planned size, recent jobs

    def full(self) -> bool:
        """Whether a new stream would pass the limit. A stream counts from its body's first step (a
        body the server never starts, its client gone, is never counted), so requests arriving
        together may pass the limit by their number: a bound, not an exact count."""
        return self.active >= self.limit

    def entered(self) -> None:
        with self._lock:
            self.active += 1

    def left(self) -> None:
        with self._lock:
            self.active -= 1

    def planned_size(self, store: JobStore, job_id: str) -> int | None:
        """planned_size, computed once per job (the 64 most recent jobs are kept)."""
        with self._lock:
            if job_id in self._sizes:
                self._sizes.move_to_end(job_id)
                return self._sizes[job_id]
        size = planned_size(store, job_id)
        with self._lock:
            self._sizes[job_id] = size
            while len(self._sizes) > 64:
                self._sizes.popitem(last=False)
        return size


def live_weights(store: JobStore, job_id: str, idle_s: float, streams: LiveStreams) -> Response | None:
    """The live answer for a job still queued or running whose single file sits in the local store;
    None when the ordinary answer applies (finished, failed, sharded, another store, or
    INITIUM_MAX_LIVE_STREAMS streams followed already). Raises JobNotFoundError for an unknown job."""
    if store.records.load(job_id).state not in ("queued", "running"):
        return None
    candidates = live_candidates(store.artifacts, job_id, WEIGHTS)
    if candidates is None or streams.full():
        return None
    size = streams.planned_size(store, job_id)
    if size is None:
        return None
    fields = {
        "Content-Length": str(size),
        "Cache-Control": "no-store",  # the same URL answers with the finished file later
        "Content-Disposition": f'attachment; filename="{job_id[:16]}.safetensors"',
        "X-Initium-Live": "1",
    }
    body = follow(candidates, size, lambda: _state(store, job_id), idle_s, streams)
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
    candidates: Callable[[], list[Path]],
    size: int,
    state: Callable[[], str],
    idle_s: float,
    streams: LiveStreams | None = None,
) -> AsyncIterator[bytes]:
    """Bytes [0, size) of a file being written, as they appear, from the first of `candidates()` that
    opens (write.artifacts.live_candidates: the committed file, else the newest attempt's temporary
    file; a newer attempt's file has the same bytes at the same offsets). Raises LiveStreamEnded
    when the job fails (`state()`, read every CHECK_S while no byte comes) or nothing new arrived
    for `idle_s` seconds while the job was not running (queued: waiting for a worker, or for the
    next attempt after one died). A running job may pause for as long as a tensor takes to draw.
    Counted in `streams` from its first step until it ends, however it ends."""
    if streams is not None:
        streams.entered()
    source = _Source(candidates)
    sent, progressed, checked, wait = 0, time.monotonic(), 0.0, POLL_S
    try:
        while sent < size:
            chunk = await anyio.to_thread.run_sync(source.read, sent, min(READ_CHUNK, size - sent))
            if chunk:
                sent += len(chunk)
                progressed, wait = time.monotonic(), POLL_S
                yield chunk
                continue
            now = time.monotonic()
            # The job's state is read before the idle bound is applied: a job that a worker took
            # since the last look is running, and its stream goes on (the break-it run found 150
            # streams ended the moment their job started).
            if now - checked > CHECK_S or now - progressed > idle_s:
                checked = now
                current = await anyio.to_thread.run_sync(state)
                if current == "failed":
                    _ended(f"the job failed after {sent:,} of {size:,} bytes were streamed")
                if current == "running":
                    progressed = now  # a worker holds the job: it draws the next tensor
            if now - progressed > idle_s:
                _ended(
                    f"no new bytes of the weights for {idle_s:g} s (INITIUM_LIVE_IDLE_S) after {sent:,} of {size:,}; "
                    "the client waits for the job and resumes from the finished file"
                )
            await asyncio.sleep(wait)
            wait = min(2 * wait, MAX_POLL_S)
    finally:
        source.close()
        if streams is not None:
            streams.left()


def _ended(why: str) -> NoReturn:
    log.info("live download ends short: %s", why)
    raise LiveStreamEnded(why)


class _Source:
    """An open descriptor on the first of `candidates()` that opens; refresh() switches only to
    another file (by inode)."""

    def __init__(self, candidates: Callable[[], list[Path]]) -> None:
        self.candidates = candidates
        self.fd: int | None = None
        self.inode: tuple[int, int] | None = None

    def read(self, offset: int, count: int) -> bytes:
        """Up to `count` bytes at `offset`; when there are none, the files are looked up again (a
        committed file, a newer attempt's) and read once more. Runs in a worker thread."""
        if self.fd is None:
            self.refresh()
        data = os.pread(self.fd, count, offset) if self.fd is not None else b""
        if not data:
            fd = self.fd
            self.refresh()
            if self.fd is not None and self.fd != fd:
                data = os.pread(self.fd, count, offset)
        return data

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
