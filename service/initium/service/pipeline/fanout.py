"""Fan-out: one large job as part tasks on several Celery workers, assembled into the same bytes.

[Note: fan-out] The plan fixes every byte of the output before anything is generated, so parts
can be written anywhere in any order: a sharded output has one part per shard file; a single
file is split by a byte budget into runs of consecutive tensors whose data (no header) each part
writes, and the finalizer concatenates header + parts, hashing as it copies. Each tensor's values
depend only on (seed, name, index), so the bytes are those of one worker running the job alone.

    parts/lsuv.json     the LSUV factors, computed once by the coordinator
    parts/<k>.data      part k of a single file: a run of tensor data (a sharded output's part
                        k writes its shard file under its own name instead)
    parts/<k>.json      part k's file info and tensor statistics; written last = done

These are artifacts of the job (write.artifacts: a local folder or S3 keys), so the parts need no
shared volume. Every step is idempotent and each file appears whole when committed (see
[Note: files appear whole] in pipeline.job), so a redelivered task (a killed worker) simply runs
again. The last part to finish publishes the finalize task;
two parts finishing together may both publish it, and the second finalize finds the job done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from pydantic import BaseModel

from initium.schemas import report as wire
from initium.schemas.job import FileInfo
from initium.schemas.plan import Plan, PlannedTensor, Shard
from initium.schemas.request import InitRequest
from initium.service.jobs.records import add_progress
from initium.service.jobs.store import WEIGHTS, JobStore
from initium.service.pipeline.job import (
    JobRun,
    Superseded,
    attempt_writer,
    ensure_unpublished,
    execute_job,
    fail_job,
    failure_loc,
    failure_message,
    finish_files,
    mark_succeeded,
    publish_report,
    put_unpublished,
)
from initium.service.pipeline.loop import MAX_ATTEMPTS
from initium.service.plan.output import tensor_nbytes
from initium.service.write.index import metadata_for
from initium.service.write.safetensors import build_header

log = logging.getLogger("initium.worker")
Publish = Callable[[str, list[object]], None]
RUN_PART = "initium.run_part"
FINALIZE = "initium.finalize"


class PartResult(BaseModel):
    file: FileInfo
    stats: list[wire.TensorStats]
    seconds: dict[str, float]


class Lsuv(BaseModel):
    scales: dict[str, float]
    layers: list[wire.LsuvLayer]
    skipped: str | None = None


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


LSUV = "parts/lsuv.json"


def _part(k: int, kind: str) -> str:
    return f"parts/{k}.{kind}"


def _done(store: JobStore, job_id: str, n: int) -> set[int]:
    """The parts whose result is stored (one listing, not n look-ups)."""
    names = set(store.artifacts.names(job_id))
    return {k for k in range(n) if _part(k, "json") in names}


def coordinate(store: JobStore, job_id: str, device: torch.device, part_bytes: int, publish: Publish) -> None:
    """Run the job here if it is one part; else prepare the parts and publish one task each."""
    run = JobRun.load(store, job_id, device)
    parts = split(run.plan, run.request, part_bytes)
    if len(parts) < 2:
        execute_job(store, job_id, device)
        return
    # Parts left by an earlier attempt are kept: the same job id is the same request, so they hold
    # exactly the bytes a new attempt would write.
    try:
        run.rescale()
        lsuv = Lsuv(scales=run.scales, layers=run.lsuv_layers, skipped=run.lsuv_skipped)
        put_unpublished(store, job_id, LSUV, lsuv.model_dump_json().encode())
    except Superseded:
        return  # published meanwhile by another attempt
    except Exception as exc:
        fail_job(store, job_id, failure_message(exc, store.root), loc=failure_loc(exc))
        return
    log.info("job fanned out into %d parts", len(parts))
    done = _done(store, job_id, len(parts))
    for k in range(len(parts)):
        if k not in done:
            publish(RUN_PART, [job_id, k])
    if len(done) == len(parts):
        publish(FINALIZE, [job_id])


def run_part(store: JobStore, job_id: str, k: int, device: torch.device, part_bytes: int, publish: Publish) -> None:
    if store.records.load(job_id).state != "running":
        return  # finished, failed or resubmitted meanwhile: nothing this part can add
    run = JobRun.load(store, job_id, device)
    parts = split(run.plan, run.request, part_bytes)
    # A part that kills its worker is redelivered, and brokers keep no count: the records do.
    if store.records.count_part_attempt(job_id, k) > MAX_ATTEMPTS:
        fail_job(store, job_id, f"part {k + 1} of {len(parts)} stopped its worker {MAX_ATTEMPTS} times; "
                                "it may need more memory than the worker has")  # fmt: skip
        return
    # A sharded output's part is a whole shard file, written under its own name; a single file's
    # part is a run of tensor data (no header) that finalize assembles.
    sharded = run.request.output.format == "sharded"
    name = parts[k].file if sharded else _part(k, "data")
    try:
        run.scales = Lsuv.model_validate_json(store.artifacts.get(job_id, LSUV)).scales
        progress = _PartProgress(store, job_id)
        writer = attempt_writer(store, job_id, name)
        # A part's statistics are taken while its tensors are in memory, on its own worker: the
        # finalizer's report only gathers them.
        info = run.write_shard(parts[k], writer, progress.add, with_header=sharded, summarize=True)
        progress.flush()
        result = PartResult(file=info, stats=run.stats, seconds=run.clock.seconds)
        put_unpublished(store, job_id, _part(k, "json"), result.model_dump_json().encode())
    except Superseded:
        return  # a late copy of this part: the job is published, and its parts are gone with it
    except Exception as exc:
        fail_job(store, job_id, f"part {k + 1} of {len(parts)}: {failure_message(exc, store.root)}")
        return
    if len(_done(store, job_id, len(parts))) == len(parts):
        publish(FINALIZE, [job_id])


def finalize(store: JobStore, job_id: str, device: torch.device, part_bytes: int) -> None:
    """Assemble the parts into the job's files and state, exactly as one worker would, then its report."""
    if store.records.load(job_id).state != "running":
        return
    run = JobRun.load(store, job_id, device)
    plan, request = run.plan, run.request
    parts = split(plan, request, part_bytes)
    try:
        stored = [store.artifacts.get(job_id, _part(k, "json")) for k in range(len(parts))]
        results = [PartResult.model_validate_json(data) for data in stored]
        for result in results:
            for stage, seconds in result.seconds.items():
                run.clock.seconds[stage] += seconds
        run.stats = [s for result in results for s in result.stats]
        # The report's total is worker time: the parts' stages plus this assembly (they may overlap in wall time).
        run.started = time.perf_counter() - sum(run.clock.seconds.values())
        t = time.perf_counter()
        if request.output.format == "sharded":
            files = [r.file for r in results]  # the parts wrote the shard files themselves
        else:
            # header + the parts' data, in order, hashed as it is copied (SHA-256 does not compose).
            header = build_header(_file_order(plan), metadata_for(plan, request))
            ensure_unpublished(store, job_id)
            files = [store.artifacts.compose(job_id, WEIGHTS, header, [_part(k, "data") for k in range(len(parts))])]
        run.clock.add("write", t)
        lsuv = Lsuv.model_validate_json(store.artifacts.get(job_id, LSUV))
        run.scales, run.lsuv_layers = lsuv.scales, lsuv.layers  # the probe generates with the same factors
        run.lsuv_skipped = lsuv.skipped
        files = finish_files(store, job_id, run, files)
        mark_succeeded(store, job_id, files)
    except Superseded:
        return  # a duplicate finalize that won: its files stand
    except Exception as exc:
        # A duplicate finalize that won stands (`fail` changes only a running job): nothing is lost.
        fail_job(store, job_id, f"assembling the parts: {failure_message(exc, store.root)}")
        return
    store.artifacts.delete(job_id, [n for n in store.artifacts.names(job_id) if n.startswith("parts/")])
    publish_report(store, job_id, run, device)  # the weights are served already (see [Note: weights first])


class _PartProgress:
    """Parts on several workers add to one progress (an update of the job's record, under its lock),
    at most every `interval` seconds (as ProgressSaver throttles a whole job) and at the end."""

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
        add_progress(self.store.records, self.job_id, self._tensors, self._bytes)  # capped at the totals
        self._tensors = self._bytes = 0
        self._last = time.monotonic()


__all__ = ["FINALIZE", "RUN_PART", "coordinate", "finalize", "run_part", "split"]
