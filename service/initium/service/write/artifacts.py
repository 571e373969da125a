"""The artifact store: the one interface through which bytes at rest are written, read, served and evicted.

A job's artifacts are named objects under its id: the weights or shard files, the shard index, the
report, the fan-out parts (`parts/<k>.data`) and small bookkeeping objects. Reports kept for the
record (POST /v1/reports) live beside the jobs. Two implementations:

    LocalArtifacts (write/directory.py)  <data_dir>/jobs/<id>/<name>, <data_dir>/reports/<id>.json
    S3Artifacts (write/s3.py)            s3://bucket/<prefix>jobs/<id>/<name>, .../reports/<id>.json

A large file is written as a stream (`writer`): sequential chunks, hashed on the way, made visible
under its final name only by `commit`, never partially; `abort` leaves nothing. The sha256 is
always that of the whole file (SHA-256 does not compose, so `compose` hashes while it copies).
A `Stamp` identifies one stored version of an object (local: size, mtime, inode; S3: size, ETag):
the worker records the stamp of each file it hashed (`record_hashed`), so the API serves an
untouched file on the worker's word and hashes only a file that changed since.
Names are validated before they touch a path or a key, so nothing a user sends names an object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from initium.schemas.job import FileInfo
from initium.service.errors import StoreUnavailableError, volume_full_as_507

log = logging.getLogger("initium.store")

# A file name, optionally under one folder (parts/0.data); never starting with a dot, so temporary
# names (".<name>.<attempt>.partial") and the store's own objects cannot be named by a caller.
NAME = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[A-Za-z0-9_][A-Za-z0-9_.-]*$")
HASHED = "hashed.json"  # {name: {sha256, size, version}}: what the worker hashed, as it stood then
ACCESSED = "accessed"  # touched whenever the job's artifacts are served (eviction's "last use")
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Stamp:
    """One stored version of an object: size in bytes plus a version token (local: "mtime_ns:inode";
    S3: the ETag). Bytes that change get another stamp."""

    size: int
    version: str


@dataclass(frozen=True)
class Usage:
    """A job's footprint for eviction: bytes stored, and when it was last served (seconds since
    the epoch; None when never served)."""

    bytes: int
    last_used: float | None


class ArtifactWriter(Protocol):
    """A file being written: chunks in order, then commit() or abort()."""

    name: str
    bytes_written: int

    def write(self, chunk: bytes | memoryview) -> None: ...

    def commit(self) -> FileInfo:
        """Make the file visible under its name, atomically; returns its name, sha256 and size."""
        ...

    def abort(self) -> None:
        """Drop what was written; nothing of this writer stays in the store."""
        ...


class Artifacts(Protocol):
    """Where a job's bytes live. Every method validates job_id (64 hex digits, JobNotFoundError
    otherwise) and name (ValueError otherwise); a store that is down raises StoreUnavailableError."""

    def check(self) -> None:
        """Cheaply, for readiness: StoreUnavailableError (with its `reason`) unless the store is usable now."""
        ...

    def writer(self, job_id: str, name: str) -> ArtifactWriter: ...

    def put(self, job_id: str, name: str, data: bytes) -> FileInfo:
        """A small object, written whole and atomically."""
        ...

    def get(self, job_id: str, name: str) -> bytes:
        """A small object's bytes; FileNotFoundError when there is none."""
        ...

    def exists(self, job_id: str, name: str) -> bool: ...

    def compose(self, job_id: str, name: str, header: bytes, parts: Sequence[str]) -> FileInfo:
        """`header` then the objects `parts` in order, as one file `name`, hashed while copying."""
        ...

    def stamp(self, job_id: str, name: str) -> Stamp | None:
        """The stored version of `name`, None when there is none."""
        ...

    def read(self, job_id: str, name: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) of `name` (end None: to the end), in chunks; FileNotFoundError when missing."""
        ...

    def names(self, job_id: str) -> list[str]:
        """Every committed object of the job, sorted."""
        ...

    def delete(self, job_id: str, names: Iterable[str]) -> None:
        """Remove these objects; missing ones are no error."""
        ...

    def delete_job(self, job_id: str) -> None:
        """Remove everything of the job, unfinished writes included."""
        ...

    def clean(self, job_id: str) -> None:
        """Remove what attempts that died left behind (temporary files, unfinished uploads)."""
        ...

    def touch(self, job_id: str) -> None:
        """Record that the job's artifacts were served now."""
        ...

    def usage(self, job_id: str) -> Usage:
        """Bytes stored for the job and its last use, for eviction."""
        ...

    def put_report(self, request_id: str, data: bytes) -> None:
        """Keep a report for the record under its request id."""
        ...

    def get_report(self, request_id: str) -> bytes | None:
        """A report kept for the record, None when there is none; reading it counts as a use."""
        ...

    def report_usage(self) -> dict[str, Usage]:
        """Every report kept for the record: request id -> its bytes and last use (local: when it was
        recorded or last read; S3: when it was recorded), for eviction beside the jobs (issue 16:
        reports filled a volume that eviction never emptied)."""
        ...

    def delete_report(self, request_id: str) -> None:
        """Remove a report kept for the record; a missing one is no error."""
        ...


def check_name(name: str) -> str:
    if not NAME.match(name) or ".." in name:
        raise ValueError(f"{name!r} is not an artifact name: letters, digits, '_', '.', '-', one folder at most")
    return name


def attempt_suffix() -> str:
    """A temporary-name suffix of this attempt's own (ending `.partial`, which cleanups look for):
    two attempts at one job, on two workers or one, never write to the same temporary file."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"


class HashingWriter(ABC):
    """The part of a writer common to every store: sequential chunks, sha256 and size as they go.
    Subclasses implement _store(chunk), _finish() -> None and _discard()."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bytes_written = 0
        self._sha = hashlib.sha256()
        # sha256 and file or socket writes release the GIL on large buffers, so the hash runs beside
        # the write on another core (480 MB written and hashed on tmpfs: 0.45 s serially, 0.30 s side by side).
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._done = False

    def write(self, chunk: bytes | memoryview) -> None:
        if self._done:
            raise ValueError(f"{self.name}: already committed or aborted")
        hashed = self._hasher.submit(self._sha.update, chunk)
        try:
            self._store(chunk)
        finally:
            hashed.result()
        self.bytes_written += memoryview(chunk).nbytes

    def commit(self) -> FileInfo:
        if self._done:
            raise ValueError(f"{self.name}: already committed or aborted")
        self._done = True
        self._hasher.shutdown()
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise
        return FileInfo(name=self.name, sha256=self._sha.hexdigest(), size=self.bytes_written)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._hasher.shutdown()
        self._discard()

    @abstractmethod
    def _store(self, chunk: bytes | memoryview) -> None:
        """Keep `chunk`, after the ones before it (a file write, a multipart buffer)."""

    @abstractmethod
    def _finish(self) -> None:
        """Make everything stored visible under the final name at once (rename, complete upload)."""

    @abstractmethod
    def _discard(self) -> None:
        """Drop everything stored, leaving nothing under the final name (unlink, abort upload)."""


class GuardedWriter:
    """A writer that commits only while `guard()` passes (it raises otherwise): a late attempt at a
    job another attempt has already published aborts here instead of renaming over the published
    file or completing its upload onto it; what it wrote is dropped (see pipeline.job.Superseded)."""

    def __init__(self, writer: ArtifactWriter, guard: Callable[[], None]) -> None:
        self.name = writer.name
        self.bytes_written = 0
        self._writer, self._guard = writer, guard

    def write(self, chunk: bytes | memoryview) -> None:
        self._writer.write(chunk)
        self.bytes_written = self._writer.bytes_written

    def commit(self) -> FileInfo:
        try:
            self._guard()
        except BaseException:
            self._writer.abort()
            raise
        return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


def compose_by_copy(store: Artifacts, job_id: str, name: str, header: bytes, parts: Sequence[str]) -> FileInfo:
    """compose for any store: the header and each part streamed through one writer."""
    writer = store.writer(job_id, name)
    try:
        writer.write(header)
        for part in parts:
            for chunk in store.read(job_id, part):
                writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def record_hashed(store: Artifacts, job_id: str, files: Sequence[FileInfo]) -> None:
    """Stamp each file this worker hashed as it wrote it, so the API can serve it without hashing it
    again: a file whose stamp still matches has not been touched since."""
    stamps = {}
    for f in files:
        stamp = store.stamp(job_id, f.name)
        if stamp is not None:
            stamps[f.name] = {"sha256": f.sha256, "size": stamp.size, "version": stamp.version}
    store.put(job_id, HASHED, json.dumps(stamps).encode())


def hashed_sha256(store: Artifacts, job_id: str, name: str, stamp: Stamp) -> str | None:
    """The sha256 the worker computed while writing `name`, if the file still has the stamp it had then."""
    try:
        entry = json.loads(store.get(job_id, HASHED))[name]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(entry, dict) or (entry.get("size"), entry.get("version")) != (stamp.size, stamp.version):
        return None
    sha256 = entry.get("sha256")
    return sha256 if isinstance(sha256, str) else None


def sha256_of(store: Artifacts, job_id: str, name: str) -> str:
    """Hash a stored file by reading it whole (FileNotFoundError when it is missing)."""
    digest = hashlib.sha256()
    for chunk in store.read(job_id, name):
        digest.update(chunk)
    return digest.hexdigest()


def live_candidates(store: Artifacts, job_id: str, name: str) -> Callable[[], list[Path]] | None:
    """Where `name` can be read while it is being written, for a store that allows it (a local
    directory, a shared POSIX volume): a function listing, each time it is called, the committed file
    and then the temporary file the newest attempt marked (see [Note: live files] in write.live).
    None for a store whose files cannot be followed (S3: an upload is invisible until complete)."""
    from initium.service.write.directory import LocalArtifacts
    from initium.service.write.live import live_temporary

    if not isinstance(store, LocalArtifacts):
        return None
    path = store.path(job_id, name)
    return lambda: [p for p in (path, live_temporary(path)) if p is not None]


def open_artifacts(store: str, data_dir: Path, endpoint_url: str | None = None, *, serving: bool = False) -> Artifacts:
    """The store a setting names: "local" (under data_dir) or "s3://bucket[/prefix]" (boto3 reads the
    region and credentials from the standard AWS variables; endpoint_url for MinIO and the like).
    A worker's S3 store waits out blips and creates its bucket, or raises StoreUnavailableError; the
    API's (`serving`) fails fast and starts even while S3 is down (its /readyz says so until it is back)."""
    if store == "local":
        from initium.service.write.directory import LocalArtifacts

        return LocalArtifacts(data_dir)
    if store.startswith("s3://"):
        from initium.service.write.s3 import S3Artifacts

        bucket, _, prefix = store.removeprefix("s3://").partition("/")
        s3 = S3Artifacts(bucket, prefix, endpoint_url=endpoint_url, serving=serving)
        try:
            s3.ensure_bucket()
        except StoreUnavailableError as exc:
            if not serving:
                raise
            log.warning("%s", exc.message)
        return s3
    raise ValueError(f"artifact store {store!r}: use 'local' or 's3://bucket/prefix'")


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> None:
    """`data` (bytes, or pieces written in order: a large plan is never one string in memory) under
    `path` via a temporary name in the same folder (created if missing): a reader sees the old file
    or the new one, never a part. A volume with no room (ENOSPC, EDQUOT, EFBIG) raises
    InsufficientStorageError naming the file, not its folder, and leaves no temporary file."""
    with volume_full_as_507(path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.writelines([data] if isinstance(data, bytes) else data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
