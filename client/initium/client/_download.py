"""Streamed, resumable, verified downloads, and where a finished job's files go.

The file streams into `.<name>.<sha256[:16]>.part` beside the target, hashed as it arrives. When the
connection drops, the next request asks for the rest (`Range: bytes=N-`) only if the file is still
the same one (`If-Range: "<sha256>"`, the ETag the service sends); a server that answers 200
instead sends the whole file again, and the part restarts. A part left by an earlier process is
re-hashed and continued. The target appears (by rename) only once the sha256 matches, fsync'd first
(the file, then its folder): a verified file survives a crash of the machine it was written to.

[Note: live downloads] While the job is still writing its single file, `live_download` asks for it
with `live=1` and the service streams the bytes as the worker writes them (issue 17; the service's
api.live). The sha256 is not known yet, so the bytes go into a part of their own (`live_part`), hashed
as they arrive; once the job has succeeded, `download` takes that part over (a rename onto the usual
part, with its running hash) and either finds it whole or resumes it with Range + If-Range from the
finished file. A part whose bytes do not hash to the job's sha256 is dropped and the file fetched
once more from the start; a second mismatch raises IntegrityError. The target appears only verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from tqdm import tqdm

from initium.client._cache import DownloadCache
from initium.client._calls import raise_for_status
from initium.client._errors import APIConnectionError, APIStatusError, IntegrityError
from initium.client._fetch import Fetch, file_url, is_sharded, weights_url
from initium.client._retry import RetryPolicy
from initium.schemas.job import JobStatus

CHUNK = 1 << 20
# A live body may pause while the job is queued or between tensors; the service ends an idle one
# after INITIUM_LIVE_IDLE_S (30 s by default), so the client waits at least this long for a byte.
LIVE_READ_S = 90.0
# Once every byte arrived the job is about to be published: its status is asked this often, this long.
SETTLE_POLL_S, SETTLE_S = 0.01, 2.0


def artifact_fetches(
    status: JobStatus, path: str | Path | None, cache: DownloadCache | None = None
) -> tuple[Path, list[Fetch]]:
    """Where a finished job's files go, and the path the result names: the safetensors file, or
    for sharded output the index beside its shards (one directory, as Hugging Face lays it out).
    Without `path`: the download cache's folder for this artifact, else a fresh temporary directory."""
    if status.sha256 is None:
        raise IntegrityError(f"job {status.id} succeeded without a sha256")
    cached = cache.folder(status.sha256) if cache else None  # None also when the cache is unusable
    # The folder for sharded output; without a path, also where the single file goes.
    folder = Path(path) if path else cached or Path(tempfile.mkdtemp(prefix="initium-"))
    if is_sharded(status):
        fetches = [Fetch(file_url(status.id, f.name), folder / f.name, f.sha256, f.size, cached and cached / f.name)
                   for f in status.files]  # fmt: skip
        return folder / status.files[-1].name, fetches
    name = f"{status.id[:16]}.safetensors"
    target = Path(path) if path else folder / name
    return target, [Fetch(weights_url(status.id), target, status.sha256, status.size or 0, cached and cached / name)]


def download(
    http: httpx.Client, fetch: Fetch, retry: RetryPolicy, progress: bool | None = None, received: Received | None = None
) -> Path:
    """Stream `fetch.url` to `fetch.target`, resuming after dropped connections; progress on stderr
    when it is a terminal (progress=None), always (True) or never (False). `received`: what a live
    download left, taken over and completed; if it does not verify, the file is fetched once more
    from the start (see [Note: live downloads]). Raises IntegrityError when the bytes do not hash to
    `fetch.sha256`."""
    if received is not None:
        with contextlib.suppress(IntegrityError):
            return _download(http, fetch, retry, progress, received)
    return _download(http, fetch, retry, progress, None)


def _download(
    http: httpx.Client, fetch: Fetch, retry: RetryPolicy, progress: bool | None, received: Received | None
) -> Path:
    state, url = _Part(fetch, progress, received), fetch.url
    failures = 0
    try:
        while not state.whole():
            try:
                with http.stream("GET", url, headers=state.headers()) as response:
                    if response.status_code >= 400:
                        response.read()
                    if state.begin(response):
                        with open(state.path, state.mode()) as out:
                            for chunk in response.iter_bytes(CHUNK):
                                state.write(out, chunk)
                break
            except (httpx.TransportError, APIStatusError) as exc:
                failures += 1
                time.sleep(state.failed(exc, url, failures, retry))
    finally:
        state.close()
    return state.finish()


async def adownload(
    http: httpx.AsyncClient,
    fetch: Fetch,
    retry: RetryPolicy,
    progress: bool | None = None,
    received: Received | None = None,
) -> Path:
    """download() for an httpx.AsyncClient (the file writes stay blocking: they are local and short)."""
    if received is not None:
        with contextlib.suppress(IntegrityError):
            return await _adownload(http, fetch, retry, progress, received)
    return await _adownload(http, fetch, retry, progress, None)


async def _adownload(
    http: httpx.AsyncClient, fetch: Fetch, retry: RetryPolicy, progress: bool | None, received: Received | None
) -> Path:
    state, url = _Part(fetch, progress, received), fetch.url
    failures = 0
    try:
        while not state.whole():
            try:
                async with http.stream("GET", url, headers=state.headers()) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    if state.begin(response):
                        with open(state.path, state.mode()) as out:
                            async for chunk in response.aiter_bytes(CHUNK):
                                state.write(out, chunk)
                break
            except (httpx.TransportError, APIStatusError) as exc:
                failures += 1
                await asyncio.sleep(state.failed(exc, url, failures, retry))
    finally:
        state.close()
    return state.finish()


@dataclass
class Received:
    """What a live download left on disk: the part file, the sha256 state of its bytes and their count."""

    path: Path
    digest: hashlib._Hash
    size: int
    whole: bool = False  # every byte the answer announced arrived (its Content-Length)

    def discard(self) -> None:
        """Remove the part (a no-op once `download` has taken it over)."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def live_part(job_id: str, path: str | Path | None, cache: DownloadCache | None) -> Path:
    """Where a live download of job `job_id` goes while its sha256, and so its usual part's name, is
    unknown: on the filesystem of the file it becomes, so taking it over is a rename. Beside `path`,
    else in the download cache's `.live` folder, else in the temporary directory (where a download
    without a cache goes too). Unique per process and call. Parts there that a client killed
    mid-download left (its pid no longer runs here, or a day old) are removed first: nothing else
    ever names them again."""
    unique = f"{job_id[:16]}.{os.getpid()}-{uuid.uuid4().hex[:8]}{LIVE_SUFFIX}"
    if path:
        folder, prefix = Path(path).parent, f".{Path(path).name}."
    elif cache is not None:
        folder, prefix = cache.root / ".live", "."
    else:
        folder, prefix = Path(tempfile.gettempdir()), ".initium-"
    sweep_dead_parts(folder, prefix)
    return folder / f"{prefix}{unique}"


LIVE_SUFFIX = ".live.partial"
_OWNER = re.compile(r"\.(\d+)-[0-9a-f]{8}" + re.escape(LIVE_SUFFIX) + "$")
STALE_PART_S = 86_400.0


def sweep_dead_parts(folder: Path, prefix: str) -> None:
    """Remove the live parts in `folder` named `prefix`... whose process is gone (the pid in the
    name) or that have not changed for STALE_PART_S (a process on another host sharing the folder)."""
    with contextlib.suppress(OSError):
        for part in folder.glob(f"{glob.escape(prefix)}*{LIVE_SUFFIX}"):
            owner = _OWNER.search(part.name)
            if owner is None or int(owner.group(1)) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if not _running(int(owner.group(1))) or time.time() - part.stat().st_mtime > STALE_PART_S:
                    part.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def live_download(
    http: httpx.Client, job_id: str, part: Path, progress: bool | None, deadline: float | None
) -> Received | None:
    """The job's single file as the service writes it, into `part`, hashed as it arrives, until the
    body ends, breaks off or `deadline` (time.monotonic()) passes: what arrived, or None when the
    service answered with an error (sharded output, an S3 store, a failed job: see [Note: live
    downloads]) or could not be reached. Never raises for the stream's sake (a broken body, a part
    that cannot be written): the caller waits for the job either way, and its download says what fails."""
    sink = _LiveSink(part, progress)
    try:
        with http.stream("GET", weights_url(job_id), params={"live": "1"}, timeout=_live_timeout(http, deadline)) as r:
            if r.status_code != 200:
                r.read()
                return None
            sink.begin(r)
            for chunk in r.iter_bytes():
                sink.write(chunk)
                if deadline is not None and time.monotonic() > deadline:
                    break
    except (httpx.TransportError, OSError):
        pass  # a broken stream (or a part that cannot be written): the download proper goes on from what arrived
    finally:
        sink.close()
    return sink.received()


async def alive_download(
    http: httpx.AsyncClient, job_id: str, part: Path, progress: bool | None, deadline: float | None
) -> Received | None:
    """live_download() for an httpx.AsyncClient."""
    sink = _LiveSink(part, progress)
    url, timeout = weights_url(job_id), _live_timeout(http, deadline)
    try:
        async with http.stream("GET", url, params={"live": "1"}, timeout=timeout) as r:
            if r.status_code != 200:
                await r.aread()
                return None
            sink.begin(r)
            async for chunk in r.aiter_bytes():
                sink.write(chunk)
                if deadline is not None and time.monotonic() > deadline:
                    break
    except (httpx.TransportError, OSError):
        pass  # a broken stream (or a part that cannot be written): the download proper goes on from what arrived
    finally:
        sink.close()
    return sink.received()


def _live_timeout(http: httpx.Client | httpx.AsyncClient, deadline: float | None) -> httpx.Timeout:
    """The client's timeouts, with a read timeout long enough for a live body's pauses, cut at `deadline`."""
    read = http.timeout.read
    if read is not None:
        read = max(read, LIVE_READ_S)
    if deadline is not None:
        left = max(deadline - time.monotonic(), 0.001)
        read = left if read is None else min(read, left)
    return httpx.Timeout(http.timeout.connect, read=read, write=http.timeout.write, pool=http.timeout.pool)


class _LiveSink:
    """The part a live download writes: created at the first answer, hashed as it is written. Each
    piece goes to the file as it arrives (unbuffered): a live body trickles, one tensor at a time, and
    what arrived is on disk, not in a buffer. The pieces are the socket's reads (64 KiB), hashed
    inline: handing each to a hashing thread would cost about as much as hashing it."""

    def __init__(self, part: Path, progress: bool | None) -> None:
        self.part, self.progress = part, progress
        self.digest, self.have, self.size = hashlib.sha256(), 0, 0
        self.out: IO[bytes] | None = None
        self.bar: tqdm[Any] | None = None

    def begin(self, response: httpx.Response) -> None:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(self.part, "wb", buffering=0)  # noqa: SIM115  (closed in close())
        self.size = int(response.headers.get("content-length", 0))
        size = self.size or None
        hidden = None if self.progress is None else not self.progress
        self.bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc="weights (live)",
                        disable=hidden, file=sys.stderr, leave=False)  # fmt: skip

    def write(self, chunk: bytes) -> None:
        assert self.out is not None and self.bar is not None
        view = memoryview(chunk)
        while view:  # a raw file may take less than it was given
            view = view[self.out.write(view) or 0 :]
        self.digest.update(chunk)
        self.have += len(chunk)
        self.bar.update(len(chunk))

    def close(self) -> None:
        if self.out is not None and self.whole():
            # Durable now, while the worker publishes the job: the fsync before the file appears
            # then finds nothing left to write.
            with contextlib.suppress(OSError):
                os.fsync(self.out.fileno())
        for closing in (self.out, self.bar):
            if closing is not None:
                closing.close()

    def whole(self) -> bool:
        return self.size > 0 and self.have == self.size

    def received(self) -> Received | None:
        if self.out is None:
            return None
        return Received(self.part, self.digest, self.have, self.whole())


def settled(status: Callable[[], JobStatus], received: Received | None) -> JobStatus | None:
    """The job's status once it has succeeded, asked every SETTLE_POLL_S for up to SETTLE_S after a
    live download received every byte (the worker is committing and publishing the file right
    then); None when it has not succeeded by then, or failed, or nothing whole arrived: the caller
    waits as usual (which raises JobFailedError for a failed job)."""
    if received is None or not received.whole:
        return None
    until = time.monotonic() + SETTLE_S
    while time.monotonic() < until:
        if (current := status()).state == "succeeded":
            return current
        if current.state == "failed":
            return None  # wait() raises JobFailedError
        time.sleep(SETTLE_POLL_S)
    return None


async def asettled(status: Callable[[], Awaitable[JobStatus]], received: Received | None) -> JobStatus | None:
    """settled() for an AsyncClient."""
    if received is None or not received.whole:
        return None
    until = time.monotonic() + SETTLE_S
    while time.monotonic() < until:
        if (current := await status()).state == "succeeded":
            return current
        if current.state == "failed":
            return None  # wait() raises JobFailedError
        await asyncio.sleep(SETTLE_POLL_S)
    return None


def _hashed_write(hasher: ThreadPoolExecutor, digest: hashlib._Hash, out: IO[bytes], chunk: bytes) -> None:
    # Both release the GIL on large buffers: the hash runs beside the write, on another core.
    hashed = hasher.submit(digest.update, chunk)
    out.write(chunk)
    hashed.result()


class _Part:
    """The part file, its running hash and its progress bar: everything but the I/O loop."""

    def __init__(self, fetch: Fetch, progress: bool | None, received: Received | None = None) -> None:
        target = fetch.target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target, self.sha256, self.size = target, fetch.sha256, fetch.size or None
        self.path = target.with_name(f".{target.name}.{self.sha256[:16]}.part")
        self.digest, self.have = _taken_over(received, self.path, fetch.size) or _rehash(self.path)
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self.bar = tqdm(total=self.size, initial=self.have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=target.name, disable=None if progress is None else not progress, file=sys.stderr,
                        leave=False)  # fmt: skip

    def whole(self) -> bool:
        """Whether the part already holds every byte (a live download that ran to the end)."""
        return self.size is not None and self.have == self.size

    def headers(self) -> dict[str, str]:
        return {"Range": f"bytes={self.have}-", "If-Range": f'"{self.sha256}"'} if self.have else {}

    def begin(self, response: httpx.Response) -> bool:
        """Whether body bytes follow; raises the typed error of an error response (body read)."""
        if response.status_code == 416:  # nothing left to send: the part is already whole
            return False
        raise_for_status(response)
        if self.have and response.status_code != 206:  # the server sent everything again
            self.digest, self.have = hashlib.sha256(), 0
            self.bar.reset(total=self.size)
        return True

    def mode(self) -> str:
        return "ab" if self.have else "wb"

    def write(self, out: IO[bytes], chunk: bytes) -> None:
        _hashed_write(self.hasher, self.digest, out, chunk)
        self.have += len(chunk)
        self.bar.update(len(chunk))

    def failed(self, exc: Exception, url: str, failures: int, retry: RetryPolicy) -> float:
        """Seconds to wait before resuming, or the error to raise when retrying is pointless."""
        error = exc if isinstance(exc, APIStatusError) else APIConnectionError(f"{url} broke off: {exc}")
        if failures >= retry.max_attempts or not retry.retryable(error):
            raise error from exc
        self.digest, self.have = _rehash(self.path)  # exactly what reached the disk before the break
        self.bar.reset(total=self.size)
        self.bar.update(self.have)
        return retry.delay(failures, getattr(error, "retry_after", None))

    def close(self) -> None:
        self.hasher.shutdown()
        self.bar.close()

    def finish(self) -> Path:
        if self.digest.hexdigest() != self.sha256:
            self.path.unlink(missing_ok=True)
            raise IntegrityError(
                f"{self.target.name}: downloaded sha256 {self.digest.hexdigest()}, the server recorded {self.sha256}"
            )
        _fsync(self.path)
        self.path.replace(self.target)
        _fsync_folder(self.target.parent)
        return self.target


def _taken_over(received: Received | None, part: Path, size: int) -> tuple[hashlib._Hash, int] | None:
    """A live download's part moved onto `part`, with its running hash; None when there is none to
    take (or it is longer than the file: not this file's bytes)."""
    if received is None or received.size > size:
        return None
    try:
        received.path.replace(part)
    except OSError:  # another filesystem after all: the file is fetched as if nothing had arrived
        return None
    return received.digest, received.size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows flushes only a handle open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder where the OS allows it (POSIX; not Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rehash(part: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    if not part.exists():
        return digest, 0
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest, part.stat().st_size
