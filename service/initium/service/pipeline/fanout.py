"""Fan-out: one large job as part tasks on several Celery workers, assembled into the same bytes.

[Note: fan-out] The plan fixes every byte of the output before anything is generated, so parts
can be written anywhere in any order: a sharded output has one part per shard file; a single
file is split by a byte budget into runs of consecutive tensors whose data (no header) each part
writes, and the finalizer concatenates header + parts, hashing as it copies. Each tensor's values
depend only on (seed, name, index), so the bytes are those of one worker running the job alone.

    jobs/<id>/parts/lsuv.json     the LSUV factors, computed once by the coordinator
    jobs/<id>/parts/<k>.data      part k: a whole shard file, or a run of tensor data
    jobs/<id>/parts/<k>.json      part k's file info and tensor statistics; written last = done

Every step is idempotent and writes under its own temporary names, so a redelivered task
(a killed worker) simply runs again. The last part to finish publishes the finalize task;
two parts finishing together may both publish it, and the second finalize finds the job done.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from pydantic import BaseModel

from initium.schemas import report as wire
from initium.schemas.errors import ErrorInfo
from initium.schemas.job import FileInfo
from initium.schemas.plan import Plan, PlannedTensor, Shard
from initium.schemas.request import InitRequest
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.store import WEIGHTS, JobStore, atomic_write, attempt_suffix
from initium.service.model.lsuv import lsuv_scales
from initium.service.pipeline.job import (
    NO_LIMITS,
    StageClock,
    execute_job,
    failure_message,
    finish_job,
    mark_succeeded,
    metadata_for,
    write_index,
    write_tensors,
)
from initium.service.pipeline.loop import MAX_ATTEMPTS
from initium.service.plan.output import INDEX_FILE, tensor_nbytes
from initium.service.plan.planner import make_plan
from initium.service.write.safetensors import build_header

log = logging.getLogger("initium.worker")
Publish = Callable[[str, list[object]], None]
RUN_PART = "initium.run_part"
FINALIZE = "initium.finalize"
COPY_CHUNK = 16 << 20


class PartResult(BaseModel):
    file: FileInfo
    stats: list[wire.TensorStats]
    seconds: dict[str, float]


class Lsuv(BaseModel):
    scales: dict[str, float]
    layers: list[wire.LsuvLayer]


def split(plan: Plan, request: InitRequest, part_bytes: int) -> list[Shard]:
    """The parts: the shards of a sharded output; runs of tensors of at most `part_bytes` (one
    tensor at least) for a single file."""
    if request.output.format == "sharded":
        return list(plan.shards)
    runs: list[tuple[list[str], int]] = []
    for planned in _file_order(plan):
        size = tensor_nbytes(planned)
        if not runs or runs[-1][1] + size > part_bytes:
            runs.append(([], 0))
        names, total = runs[-1]
        runs[-1] = ([*names, planned.name], total + size)
    return [Shard(file=WEIGHTS, tensors=names, bytes=total) for names, total in runs]


def _file_order(plan: Plan) -> list[PlannedTensor]:
    """The single file's tensors in its header's order (the one shard's)."""
    by_name = {t.name: t for t in plan.tensors}
    return [by_name[name] for name in plan.shards[0].tensors]


def _load(store: JobStore, job_id: str) -> tuple[InitRequest, Plan]:
    request = store.load_request(job_id)
    return request, make_plan(request, NO_LIMITS, PresetStore(store.root).all())


def _parts_dir(store: JobStore, job_id: str) -> Path:
    return store.artifact(job_id, "parts")


def coordinate(store: JobStore, job_id: str, device: torch.device, part_bytes: int, publish: Publish) -> None:
    """Run the job here if it is one part; else prepare the parts and publish one task each."""
    request, plan = _load(store, job_id)
    parts = split(plan, request, part_bytes)
    if len(parts) < 2:
        execute_job(store, job_id, device)
        return
    # Parts left by an earlier attempt are kept: the same job id is the same request, so they hold
    # exactly the bytes a new attempt would write.
    folder = _parts_dir(store, job_id)
    try:
        folder.mkdir(exist_ok=True)
        scales, layers = lsuv_scales(request, plan, device)
        atomic_write(folder / "lsuv.json", Lsuv(scales=scales, layers=layers).model_dump_json().encode())
    except Exception as exc:
        _fail(store, job_id, failure_message(exc, folder))
        return
    log.info("job fanned out into %d parts", len(parts))
    for k in range(len(parts)):
        if not (folder / f"{k}.json").exists():
            publish(RUN_PART, [job_id, k])
    if all((folder / f"{k}.json").exists() for k in range(len(parts))):
        publish(FINALIZE, [job_id])


def run_part(store: JobStore, job_id: str, k: int, device: torch.device, part_bytes: int, publish: Publish) -> None:
    if store.load(job_id).state != "running":
        return  # finished, failed or resubmitted meanwhile: nothing this part can add
    request, plan = _load(store, job_id)
    parts = split(plan, request, part_bytes)
    folder = _parts_dir(store, job_id)
    if _count_attempt(store, job_id, folder / f"{k}.attempts") > MAX_ATTEMPTS:
        _fail(store, job_id, f"part {k + 1} of {len(parts)} stopped its worker {MAX_ATTEMPTS} times; "
                             "it may need more memory than the worker has")  # fmt: skip
        return
    temporary = folder / f".{k}.{attempt_suffix()}"
    try:
        lsuv = Lsuv.model_validate_json((folder / "lsuv.json").read_bytes())
        clock, stats = StageClock(), list[wire.TensorStats]()
        progress = _PartProgress(store, job_id)
        info = write_tensors(plan, request, device, lsuv.scales, parts[k], temporary, stats, clock, progress.add,
                             with_header=request.output.format == "sharded")  # fmt: skip
        progress.flush()
        temporary.replace(folder / f"{k}.data")
        result = PartResult(file=info, stats=stats, seconds=clock.seconds)
        atomic_write(folder / f"{k}.json", result.model_dump_json().encode())
    except Exception as exc:
        temporary.unlink(missing_ok=True)
        _fail(store, job_id, f"part {k + 1} of {len(parts)}: {failure_message(exc, folder)}")
        return
    if all((folder / f"{i}.json").exists() for i in range(len(parts))):
        publish(FINALIZE, [job_id])


def finalize(store: JobStore, job_id: str, device: torch.device, part_bytes: int) -> None:
    """Assemble the parts into the job's files, report and state, exactly as one worker would."""
    if store.load(job_id).state != "running":
        return
    request, plan = _load(store, job_id)
    parts = split(plan, request, part_bytes)
    folder = _parts_dir(store, job_id)
    attempt = attempt_suffix()
    partials: dict[str, Path] = {}
    try:
        results = [PartResult.model_validate_json((folder / f"{k}.json").read_bytes()) for k in range(len(parts))]
        clock = StageClock()
        for result in results:
            for stage, seconds in result.seconds.items():
                clock.seconds[stage] += seconds
        stats = [s for result in results for s in result.stats]
        # The report's total is worker time: the parts' stages plus this assembly (they may overlap in wall time).
        start = time.perf_counter() - sum(clock.seconds.values())
        t = time.perf_counter()
        if request.output.format == "sharded":
            files = [r.file for r in results]
            partials |= {part.file: folder / f"{k}.data" for k, part in enumerate(parts)}
            partials[INDEX_FILE] = store.artifact(job_id, f".{INDEX_FILE}.{attempt}")
            files.append(write_index(plan, partials[INDEX_FILE]))
        else:
            partials[WEIGHTS] = store.artifact(job_id, f".{WEIGHTS}.{attempt}")
            files = [_concatenate(plan, request, [folder / f"{k}.data" for k in range(len(parts))], partials[WEIGHTS])]
        clock.add("write", t)
        by_tensor = {name: partials[part.file] for part in plan.shards for name in part.tensors}
        lsuv = Lsuv.model_validate_json((folder / "lsuv.json").read_bytes())
        finish_job(store, job_id, request, plan, device, files, by_tensor, stats, clock, start, lsuv.layers, partials)
    except Exception as exc:
        for path in partials.values():
            if path.name.endswith(".partial"):
                path.unlink(missing_ok=True)
        if store.load(job_id).state != "succeeded":  # else a duplicate finalize won; nothing is lost
            _fail(store, job_id, f"assembling the parts: {failure_message(exc, folder)}")
        return
    mark_succeeded(store, job_id, files)
    shutil.rmtree(folder, ignore_errors=True)


def _concatenate(plan: Plan, request: InitRequest, datas: list[Path], path: Path) -> FileInfo:
    """header + the parts' data, in order, hashed as it is copied; fsync before it counts."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:
        header = build_header(_file_order(plan), metadata_for(plan, request))
        for chunk in _chunks(header, datas):
            out.write(chunk)
            sha.update(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return FileInfo(name=WEIGHTS, sha256=sha.hexdigest(), size=size)


def _chunks(header: bytes, datas: list[Path]) -> Iterator[bytes]:
    yield header
    for data in datas:
        with open(data, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                yield chunk


def _fail(store: JobStore, job_id: str, message: str) -> None:
    with _locked(store, job_id):
        record = store.load(job_id)
        if record.state == "running":
            store.save(record.model_copy(update={"state": "failed", "error": ErrorInfo(type="job_failed",
                                                                                       message=message)}))  # fmt: skip


def _count_attempt(store: JobStore, job_id: str, path: Path) -> int:
    """One more start of a part (a part that kills its worker is redelivered; brokers keep no count)."""
    with _locked(store, job_id):
        count = int(path.read_text()) + 1 if path.exists() else 1
        atomic_write(path, str(count).encode())
    return count


class _PartProgress:
    """Parts on several workers add to one progress: a read-modify-write of job.json under a file
    lock, at most every `interval` seconds (as ProgressSaver throttles a whole job) and at the end."""

    def __init__(self, store: JobStore, job_id: str, interval: float = 0.25) -> None:
        self.store, self.job_id, self.interval = store, job_id, interval
        self._tensors = self._bytes = 0
        self._last = time.monotonic()

    def add(self, planned: PlannedTensor) -> None:
        self._tensors += 1
        self._bytes += tensor_nbytes(planned)
        if time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if not self._tensors:
            return
        with _locked(self.store, self.job_id):
            record = self.store.load(self.job_id)
            p = record.progress
            # A redelivered part counts its tensors again: never report more than the whole.
            done = {"tensors_done": min(p.tensors_total, p.tensors_done + self._tensors),
                    "bytes_done": min(p.bytes_total, p.bytes_done + self._bytes)}  # fmt: skip
            self.store.save(record.model_copy(update={"progress": p.model_copy(update=done)}))
        self._tensors = self._bytes = 0
        self._last = time.monotonic()


@contextlib.contextmanager
def _locked(store: JobStore, job_id: str) -> Iterator[None]:
    with open(store.artifact(job_id, "job.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


__all__ = ["FINALIZE", "RUN_PART", "coordinate", "finalize", "run_part", "split"]
