"""Write: the artifact store in a local directory (one machine, or a shared POSIX volume).

    <data_dir>/jobs/<id>/<name>        a job's artifacts, in the folder its records use too
    <data_dir>/reports/<id>.json       reports kept for the record

A writer is a temporary file of the attempt's own beside its target, fsynced and renamed into place
on commit (write.artifacts describes the interface); while it writes, a marker names it so the API
can follow the file as it grows (see [Note: live files] in write.live). A volume with no room
(ENOSPC, EDQUOT, EFBIG) raises InsufficientStorageError (507) and leaves no temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from initium.schemas.job import FileInfo
from initium.service.errors import InsufficientStorageError, StoreUnavailableError, volume_full_as_507
from initium.service.identity import JOB_ID, check_id
from initium.service.write.artifacts import (
    ACCESSED,
    NAME,
    READ_CHUNK,
    ArtifactWriter,
    HashingWriter,
    Stamp,
    Usage,
    atomic_write,
    attempt_suffix,
    check_name,
    compose_by_copy,
)
from initium.service.write.live import mark_live, unmark_live

log = logging.getLogger("initium.store")


class _LocalWriter(HashingWriter):
    """A temporary file of this attempt's own beside the target; fsync, then os.replace onto the name.
    A duplicate attempt renames identical bytes over it (same job id, same bytes)."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(name)
        self.path = path
        self._tmp = path.with_name(f".{path.name}.{attempt_suffix()}")
        with volume_full_as_507(f"the artifact {name}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "xb")  # noqa: SIM115  (closed in _finish or _discard)
        mark_live(path, self._tmp)  # the API follows this file as it grows (see [Note: live files])

    def _store(self, chunk: bytes | memoryview) -> None:
        with volume_full_as_507(f"the artifact {self.name}"):
            self._file.write(chunk)

    def _finish(self) -> None:
        # ENOSPC may surface only here (the buffer's last flush; fsync on NFS and delayed allocation)
        with volume_full_as_507(f"the artifact {self.name}"):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        unmark_live(self.path, self._tmp)

    def _discard(self) -> None:
        # close() flushes what is buffered, which fails again on a full volume: the file goes anyway
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)
        unmark_live(self.path, self._tmp)


class LocalArtifacts:
    """Artifacts in a local directory (one machine, or a shared POSIX volume). The job's folder is
    the one its record lives in (jobs.store), so delete_job removes the record with it."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.jobs = self.root / "jobs"
        self.reports = self.root / "reports"

    def check(self) -> None:
        if not self.jobs.is_dir():
            raise StoreUnavailableError(
                f"the artifact store {self.jobs} is missing: mount the data volume (INITIUM_DATA_DIR)", reason="missing"
            )

    def path(self, job_id: str, name: str) -> Path:
        """Where `name` lives on disk (for tests and local readers that want a file)."""
        return self.jobs / check_id(job_id) / check_name(name)

    def writer(self, job_id: str, name: str) -> ArtifactWriter:
        return _LocalWriter(self.path(job_id, name), name)

    def put(self, job_id: str, name: str, data: bytes) -> FileInfo:
        atomic_write(self.path(job_id, name), data)
        return FileInfo(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def get(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def exists(self, job_id: str, name: str) -> bool:
        return self.path(job_id, name).is_file()

    def compose(self, job_id: str, name: str, header: bytes, parts: Sequence[str]) -> FileInfo:
        return compose_by_copy(self, job_id, name, header, parts)

    def stamp(self, job_id: str, name: str) -> Stamp | None:
        try:
            st = self.path(job_id, name).stat()
        except FileNotFoundError:
            return None
        return Stamp(size=st.st_size, version=f"{st.st_mtime_ns}:{st.st_ino}")

    def read(self, job_id: str, name: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        f = open(self.path(job_id, name), "rb")  # noqa: SIM115  (opened now: a missing file raises here)
        return _read_file(f, start, end)

    def names(self, job_id: str) -> list[str]:
        """Every file of the job's folder, which it shares with the job's records (job.json and the like)."""
        folder = self.jobs / check_id(job_id)
        if not folder.is_dir():
            return []
        found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(n for n in found if NAME.match(n))

    def delete(self, job_id: str, names: Iterable[str]) -> None:
        folders = set()
        for name in names:
            path = self.path(job_id, name)
            path.unlink(missing_ok=True)
            if "/" in name:
                folders.add(path.parent)
        for folder in folders:  # a folder left empty (parts/) goes too
            with contextlib.suppress(OSError):
                folder.rmdir()

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.jobs / check_id(job_id), ignore_errors=True)

    def clean(self, job_id: str) -> None:
        for path in (self.jobs / check_id(job_id)).rglob(".*.partial"):
            path.unlink(missing_ok=True)

    def touch(self, job_id: str) -> None:
        # Bookkeeping for eviction: a full volume must not fail the download that records its use.
        try:
            with volume_full_as_507("the access stamp"):
                (self.jobs / check_id(job_id) / ACCESSED).touch()
        except InsufficientStorageError as exc:
            log.warning("job %s: last use not recorded: %s", job_id, exc.message)

    def usage(self, job_id: str) -> Usage:
        folder = self.jobs / check_id(job_id)
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0
        try:
            used: float | None = (folder / ACCESSED).stat().st_mtime
        except FileNotFoundError:
            used = None
        return Usage(bytes=size, last_used=used)

    def put_report(self, request_id: str, data: bytes) -> None:
        atomic_write(self.reports / f"{check_id(request_id)}.json", data)

    def get_report(self, request_id: str) -> bytes | None:
        path = self.reports / f"{check_id(request_id)}.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        # Eviction's "last use" is the file's mtime (atime is unreliable under relatime/noatime); a
        # stamp that fails (a full or read-only volume) must not fail the read.
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def report_usage(self) -> dict[str, Usage]:
        found = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.reports):
                request_id = entry.name.removesuffix(".json")
                if entry.name.endswith(".json") and JOB_ID.match(request_id):  # not a temporary .*.tmp
                    with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
                        st = entry.stat()
                        found[request_id] = Usage(bytes=st.st_size, last_used=st.st_mtime)
        return found

    def delete_report(self, request_id: str) -> None:
        (self.reports / f"{check_id(request_id)}.json").unlink(missing_ok=True)


def _read_file(file: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with file:
        file.seek(start)
        left = None if end is None else max(end - start, 0)
        while left is None or left > 0:
            chunk = file.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
