"""Streamed, resumable, verified downloads, and where a finished job's files go.

The file streams into `.<name>.<sha256[:16]>.part` beside the target, hashed as it arrives. When the
connection drops, the next request asks for the rest (`Range: bytes=N-`) only if the file is still
the same one (`If-Range: "<sha256>"`, the ETag the service sends); a server that answers 200
instead sends the whole file again, and the part restarts. A part left by an earlier process is
re-hashed and continued. The target appears (by rename) only once the sha256 matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import httpx
from tqdm import tqdm

from initium.client._cache import DownloadCache
from initium.client._calls import raise_for_status
from initium.client._errors import APIConnectionError, APIStatusError, IntegrityError
from initium.client._fetch import Fetch, file_url, is_sharded, weights_url
from initium.client._retry import RetryPolicy
from initium.schemas.job import JobStatus

CHUNK = 1 << 20


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


def download(http: httpx.Client, fetch: Fetch, retry: RetryPolicy, progress: bool | None = None) -> Path:
    """Stream `fetch.url` to `fetch.target`, resuming after dropped connections; progress on stderr
    when it is a terminal (progress=None), always (True) or never (False)."""
    state, url = _Part(fetch, progress), fetch.url
    failures = 0
    try:
        while True:
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


async def adownload(http: httpx.AsyncClient, fetch: Fetch, retry: RetryPolicy, progress: bool | None = None) -> Path:
    """download() for an httpx.AsyncClient (the file writes stay blocking: they are local and short)."""
    state, url = _Part(fetch, progress), fetch.url
    failures = 0
    try:
        while True:
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


class _Part:
    """The part file, its running hash and its progress bar: everything but the I/O loop."""

    def __init__(self, fetch: Fetch, progress: bool | None) -> None:
        target = fetch.target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target, self.sha256, self.size = target, fetch.sha256, fetch.size or None
        self.path = target.with_name(f".{target.name}.{self.sha256[:16]}.part")
        self.digest, self.have = _rehash(self.path)
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self.bar = tqdm(total=self.size, initial=self.have, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=target.name, disable=None if progress is None else not progress, file=sys.stderr,
                        leave=False)  # fmt: skip

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
        # Both release the GIL on large buffers: the hash runs beside the write, on another core.
        hashed = self.hasher.submit(self.digest.update, chunk)
        out.write(chunk)
        hashed.result()
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
        self.path.replace(self.target)
        return self.target


def _rehash(part: Path) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    if not part.exists():
        return digest, 0
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest, part.stat().st_size
