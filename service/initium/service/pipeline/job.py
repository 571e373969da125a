"""One job run: the stored plan's tensors through materialize and write, the job published, then the report.

The plan was made and stored at submit (jobs.submit); a run reads it and never plans again, so the
worker, a fan-out part and the finalizer all generate exactly what the API planned and refused
nothing of, and none of them imports the planner or the presets.

[Note: weights first] (issue 17) The weights are what a caller waits for: the job succeeds as soon
as its files are written, hashed and committed, and only then is the report computed (summarize and
the probe), recorded with a state of its own (report_state: pending, ready, failed). Summarize reads
each tensor again the way the probe does (an elementwise law drawn again, bit for bit the same; a
whole-tensor law read back from the stored file), so nothing of it is on the weights' path. The
embedded worker computes a report only once no job of its lane waits for its weights, and a report
being computed stops between two tensors when one arrives (publish_report's yield_to); a Celery
worker computes it right after the weights, in the same task (other workers take other jobs). The
job stays queued until its report is in: a worker that dies while computing it leaves the job
succeeded with its report pending, and the next worker to take it computes only the report. The
weights' stage clock is kept beside them (CLOCK), so a report computed later still says what the
weights took.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from initium.schemas import report as wire
from initium.schemas.errors import ErrorInfo
from initium.schemas.job import FileInfo, Progress
from initium.schemas.plan import Plan, PlannedTensor, Shard
from initium.schemas.request import InitRequest
from initium.service.errors import InitiumError, without_server_paths
from initium.service.jobs.records import fail, release_report, report_done, set_progress, start_report, succeed
from initium.service.jobs.store import REPORT, JobStore
from initium.service.materialize.tensor import TORCH_DTYPES, materialize
from initium.service.model.lsuv import lsuv_scales
from initium.service.model.probe import collect_warnings, run_probe
from initium.service.plan.output import INDEX_FILE, tensor_nbytes
from initium.service.summarize.report import build_report, tensor_stats
from initium.service.write.artifacts import Artifacts, ArtifactWriter, GuardedWriter, record_hashed
from initium.service.write.index import index_bytes, metadata_for
from initium.service.write.safetensors import SafetensorsStreamWriter, tensor_locations

log = logging.getLogger("initium.worker")
ProgressFn = Callable[[Progress], None]
TensorDone = Callable[[PlannedTensor], None]
YieldTo = Callable[[], bool]
STAGES = ("plan", "lsuv", "materialize", "summarize", "write", "propagate")
# Runs at one report that may stop their worker (killed, out of memory) before it is recorded failed.
MAX_REPORT_ATTEMPTS = 3
CLOCK = "clock.json"  # the weights' stage seconds, for a report computed after them


@dataclass
class StageClock:
    """Seconds spent per stage; a fanned-out job adds its parts' clocks."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, stage: str, since: float) -> float:
        t = time.perf_counter()
        self.seconds[stage] += t - since
        return t


@dataclass
class JobRun:
    """A job's request, its stored plan and the device, with what the run has gathered so far:
    the LSUV factors, each tensor's statistics and the stage clock."""

    request: InitRequest
    plan: Plan
    device: torch.device
    scales: dict[str, float] = field(default_factory=dict)
    lsuv_layers: list[wire.LsuvLayer] = field(default_factory=list)
    lsuv_skipped: str | None = None  # why LSUV did not run: the weights are then the rules' draws
    stats: list[wire.TensorStats] = field(default_factory=list)
    clock: StageClock = field(default_factory=StageClock)
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def load(cls, store: JobStore, job_id: str, device: torch.device) -> JobRun:
        """The run of a stored job: its request and the plan the API stored with it (the report's
        plan time is the time to read it)."""
        t = time.perf_counter()
        run = cls(store.records.load_request(job_id), store.records.load_plan(job_id), device)
        run.clock.add("plan", t)
        return run

    def rescale(self) -> None:
        """LSUV's factors, when the policy asks for them (a forward pass over the network)."""
        t = time.perf_counter()
        self.scales, self.lsuv_layers, self.lsuv_skipped = lsuv_scales(self.request, self.plan, self.device)
        self.clock.add("lsuv", t)

    def write_shard(
        self,
        shard: Shard,
        sink: ArtifactWriter,
        tensor_done: TensorDone,
        with_header: bool = True,
        summarize: bool = False,
    ) -> FileInfo:
        """Materialize and write `shard`'s tensors into `sink` (an artifact store writer), one at a
        time, and commit it: a safetensors file, or (with_header=False) only their data, a part of a
        file assembled later. `summarize`: each tensor's statistics too, while it is in memory (a
        fan-out part, whose statistics travel with it; a whole job summarizes after its weights are
        published, see [Note: weights first]). A failure aborts the writer: nothing of it is kept."""
        by_name = {t.name: t for t in self.plan.tensors}
        tensors = [by_name[name] for name in shard.tensors]
        metadata = metadata_for(self.plan, self.request)
        t = time.perf_counter()
        with SafetensorsStreamWriter(sink, tensors, metadata, with_header) as writer:
            for planned in tensors:
                scale = self.scales.get(planned.name, 1.0)
                values = materialize(planned, self.request.seed, self.device, scale)
                t = self.clock.add("materialize", t)
                if summarize:
                    self.stats.append(tensor_stats(planned, values, scale, len(self.plan.tensors)))
                    t = self.clock.add("summarize", t)
                writer.write(planned.name, values)
                del values
                t = self.clock.add("write", t)
                tensor_done(planned)
            return writer.close()

    def probe_source(self, artifacts: Artifacts, job_id: str) -> Callable[[str], torch.Tensor]:
        """A tensor's name -> its values, exactly the bytes written, for the probe.
        [Note: what the probe reads] An elementwise law is drawn again: as cheap as its first draw,
        bit for bit the same (values depend only on seed, name, index, law, dtype and the LSUV
        factor), and no I/O. A whole-tensor law (orthogonal: a QR per matrix) is read back instead,
        as a ranged read of its own bytes from the stored file, which costs the same in any
        artifact store and for a job whose parts were written on other workers."""
        by_name = {t.name: t for t in self.plan.tensors}
        where = tensor_locations(self.plan, metadata_for(self.plan, self.request))

        def values(name: str) -> torch.Tensor:
            planned = by_name[name]
            if planned.elementwise:
                return materialize(planned, self.request.seed, self.device, self.scales.get(name, 1.0))
            file, start, stop = where[name]
            data = bytearray(b"".join(artifacts.read(job_id, file, start, stop)))
            flat = torch.frombuffer(data, dtype=TORCH_DTYPES[planned.dtype]) if data else torch.empty(0)
            return flat.reshape(planned.output_shape()).to(self.device)

        return values

    def clock_json(self) -> bytes:
        """The stages so far and the seconds since the run started, as JSON (see resume_clock)."""
        return json.dumps({"seconds": self.clock.seconds, "total": time.perf_counter() - self.started}).encode()

    def resume_clock(self, stored: bytes | None) -> None:
        """Continue the clock of the run that wrote the weights (clock_json): a report computed
        later gives their stages, and a total from their start to its end (reading the plan and
        finding the LSUV factors again counts in that total only). Without one (a job published
        before clocks were kept), this run's clock stands."""
        if stored is None:
            return
        earlier = json.loads(stored)
        self.clock.seconds = {stage: float(earlier["seconds"].get(stage, 0.0)) for stage in STAGES}
        self.started -= float(earlier["total"])

    def summarize(self, source: Callable[[str], torch.Tensor]) -> None:
        """Each tensor's statistics, in file order, from `source` (see probe_source): what the
        report compares with the law's moments. A run whose tensors were summarized as they were
        written (fan-out parts) has them already."""
        if self.stats:
            return
        by_name = {t.name: t for t in self.plan.tensors}
        t = time.perf_counter()
        for shard in self.plan.shards:
            for name in shard.tensors:
                planned = by_name[name]
                values = source(name)
                self.stats.append(tensor_stats(planned, values, self.scales.get(name, 1.0), len(by_name)))
                del values
        self.clock.add("summarize", t)

    def report(
        self, files: list[FileInfo], probe_source: Callable[[str], torch.Tensor], yield_to: YieldTo | None = None
    ) -> wire.Report:
        """The report over the written files (the last is the main one): each tensor's statistics
        (summarize) and the probe's findings; `probe_source` gives both each tensor's values, and
        raises ReportYielded, before any tensor of either, once `yield_to()` says so."""
        source = probe_source if yield_to is None else _yielding(probe_source, yield_to)
        self.summarize(source)
        t = time.perf_counter()
        propagation = run_probe(self.request, self.plan, source, self.device)
        self.clock.add("propagate", t)
        timings = wire.StageTimings(**self.clock.seconds, total=time.perf_counter() - self.started)
        main = files[-1]
        artifact = wire.ArtifactInfo(sha256=main.sha256, size=main.size, files=files)
        return build_report(self.plan, self.request, self.stats, artifact, self.device, timings).model_copy(
            update={
                "propagation": propagation,
                "warnings": collect_warnings(self.plan, self.stats, propagation, self.lsuv_skipped),
                "lsuv": self.lsuv_layers or None,
            }
        )


def execute_job(store: JobStore, job_id: str, device: torch.device, with_report: bool = True) -> None:
    """Run one job to a terminal state; any failure becomes a failed job with the reason. The job
    succeeds with its weights; then (with_report) its report is computed and recorded (see [Note:
    weights first]); local mode leaves it to be computed when first asked for."""
    try:
        run, files = _generate(store, job_id, device, ProgressSaver(store, job_id))
        put_unpublished(store, job_id, CLOCK, run.clock_json())
        mark_succeeded(store, job_id, files)
    except Superseded:
        log.info("another attempt published this job first; this attempt stops and keeps nothing")
        return
    except Exception as exc:  # the job fails; the worker lives on to run the next one
        # A duplicate attempt that finished first (its cleanup removed this one's files) stands:
        # `fail` changes only a running job.
        fail_job(store, job_id, failure_message(exc, store.root), loc=failure_loc(exc))
        return
    if with_report:
        publish_report(store, job_id, run, device)


def publish_report(
    store: JobStore, job_id: str, run: JobRun | None, device: torch.device, yield_to: YieldTo | None = None
) -> None:
    """Compute a succeeded job's pending report and store it, then record it ready. `run` is the
    run that wrote the weights (its LSUV factors and clock), or None when the report is computed
    alone (its worker died while computing it, it failed before and was asked for again, or local
    mode asks for it): the factors are then found again (deterministic). A report that cannot be
    computed is recorded failed with the reason, and the job's weights stand; one whose runs stopped
    their worker MAX_REPORT_ATTEMPTS times fails too (jobs.records.start_report). `yield_to`, asked
    between tensors: True when jobs wait for their weights, which come first (the report stays
    pending, its run uncounted, and is computed again later). See [Note: weights first]."""
    record = start_report(store.records, job_id, MAX_REPORT_ATTEMPTS, worker_name())
    if record.state != "succeeded" or record.report_state != "pending":
        return
    try:
        if run is None:
            run = JobRun.load(store, job_id, device)
            run.rescale()
            run.resume_clock(store.artifacts.get(job_id, CLOCK) if store.artifacts.exists(job_id, CLOCK) else None)
        report = run.report(record.files, run.probe_source(store.artifacts, job_id), yield_to)
        store.artifacts.put(job_id, REPORT, report.model_dump_json(indent=1).encode())
    except ReportYielded:
        log.info("the report of job %s yields to jobs waiting for their weights", job_id)
        release_report(store.records, job_id)
        return
    except Exception as exc:  # the weights are published already: only the report is lost
        log.exception("the report of job %s could not be computed", job_id)
        message = (
            f"the report could not be computed ({failure_message(exc, store.root)}); the weights are not "
            "affected; submit the request again to compute it again"
        )
        report_done(store.records, job_id, ErrorInfo(type="report_failed", message=message))
        return
    report_done(store.records, job_id)


def worker_name() -> str:
    """host:pid, what a job record's `worker` says of the process running it (its weights or its report)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ReportYielded(BaseException):
    """A report stopped between two tensors because jobs wait for their weights, or the worker is
    stopping (see publish_report). A BaseException, as KeyboardInterrupt is: it is no error, and the
    probe's own `except Exception` (a probe never fails a job) must not turn it into a skipped probe."""


def _yielding(source: Callable[[str], torch.Tensor], yield_to: YieldTo) -> Callable[[str], torch.Tensor]:
    """`source`, raising ReportYielded before a tensor once `yield_to()` says so."""

    def values(name: str) -> torch.Tensor:
        if yield_to():
            raise ReportYielded(name)
        return source(name)

    return values


class Superseded(Exception):
    """[Note: a success stays] The job has succeeded by another attempt (a redelivered or duplicate
    run: an orphaned worker beside a new one, a message delivered twice). From then on no attempt
    touches the job: its record is frozen by the state machine (jobs.records), and its files because
    every commit of an attempt (each file, the report, the index, the stamps) first checks the
    record (ensure_unpublished) and aborts, leaving the published bytes as they are. A success that
    lands between that check and the commit meets identical bytes (same id, same bytes)."""


def ensure_unpublished(store: JobStore, job_id: str) -> None:
    """Superseded when the job has already succeeded; called before each commit of an attempt."""
    if store.records.load(job_id).state == "succeeded":
        raise Superseded(job_id)


def attempt_writer(store: JobStore, job_id: str, name: str) -> ArtifactWriter:
    """A writer for this attempt that commits only while the job is unpublished (see [Note: a success stays])."""
    return GuardedWriter(store.artifacts.writer(job_id, name), lambda: ensure_unpublished(store, job_id))


def put_unpublished(store: JobStore, job_id: str, name: str, data: bytes) -> None:
    """A small object of this attempt's, written only while the job is unpublished."""
    ensure_unpublished(store, job_id)
    store.artifacts.put(job_id, name, data)


def mark_succeeded(store: JobStore, job_id: str, files: list[FileInfo]) -> None:
    """The job's record once its files are in place (the last file is the main one: the weights, or
    the shard index). Each file is stamped as this worker hashed it, so the API serves it without
    hashing it again (jobs.submit.VerifiedFiles). Then, and only then, what other attempts left
    unfinished goes: cleaning first would end a duplicate attempt that could fail the job before
    this success is recorded. Superseded when another attempt published the job first."""
    ensure_unpublished(store, job_id)
    record_hashed(store.artifacts, job_id, files)
    if succeed(store.records, job_id, files).state == "succeeded":
        store.artifacts.clean(job_id)


def fail_job(
    store: JobStore, job_id: str, message: str, error_type: str = "job_failed", loc: Sequence[str | int] = ()
) -> None:
    """records.fail, and when the job is now failed, what its attempts left unfinished goes with it."""
    if fail(store.records, job_id, message, error_type, loc).state == "failed":
        discard_unfinished(store, job_id)


def discard_unfinished(store: JobStore, job_id: str) -> None:
    """A failed job keeps nothing partial: every attempt's temporary files or unfinished uploads and
    its fan-out parts. The transition that fails the job calls this, since an attempt that died
    cannot clean up after itself. A store that refuses is logged: the failure is recorded already."""
    try:
        store.artifacts.clean(job_id)
        store.artifacts.delete(job_id, [n for n in store.artifacts.names(job_id) if n.startswith("parts/")])
    except Exception as exc:  # the record is what counts; eviction removes the rest later
        log.warning("job %s failed, but its unfinished files stay for now: %s: %s", job_id, type(exc).__name__, exc)


def failure_loc(exc: Exception) -> list[str | int]:
    """The request field a failure names (the service's own errors carry one), else none."""
    return list(exc.loc) if isinstance(exc, InitiumError) else []


def failure_message(exc: Exception, data_dir: Path) -> str:
    """What a failed job's status says: the service's own message, or the exception's kind and text
    (an OSError's strerror, never its file name), with no server path in it (issue 16)."""
    if isinstance(exc, InitiumError):
        return without_server_paths(exc.message, data_dir)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return (
            f"the store could not take the artifact: {exc.strerror} (errno {exc.errno}); free space or fix the "
            "data volume's permissions (INITIUM_DATA_DIR), then resubmit the request (nothing partial was kept)"
        )
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror} (errno {exc.errno})"
    return without_server_paths(f"{type(exc).__name__}: {exc}", data_dir)


def _generate(
    store: JobStore, job_id: str, device: torch.device, on_progress: ProgressFn
) -> tuple[JobRun, list[FileInfo]]:
    """Write every output file through the artifact store, then the shard index; returns the run
    (what its report needs) and every file, the main one last.
    [Note: files appear whole] Each file is committed under its final name once all of it is
    written, never partially; a file cut short is aborted and leaves nothing. Which files count is
    the job record's say (jobs.records): a job is served only once it has succeeded, so a failed
    attempt's finished files, identical to what any attempt writes (same id, same bytes), may stay
    until a later attempt commits them again or eviction removes the job. A redelivered job may run
    twice at once (see [Note: outbox] in initium.service.jobs.queue): each attempt writes under
    temporary names or uploads of its own, and commits only while the job has not succeeded (see
    [Note: a success stays]); a job that fails keeps nothing partial (discard_unfinished)."""
    run = JobRun.load(store, job_id, device)
    run.rescale()
    counter = ProgressCounter(run.plan, on_progress)
    files = [run.write_shard(s, attempt_writer(store, job_id, s.file), counter.add) for s in run.plan.shards]
    return run, finish_files(store, job_id, run, files)


def finish_files(store: JobStore, job_id: str, run: JobRun, files: list[FileInfo]) -> list[FileInfo]:
    """For a sharded output, the shard index after its shards (so a reader never finds it before
    them). Returns every file, the main one (weights or index) last."""
    if run.request.output.format != "sharded":
        return files
    index = index_bytes(run.plan)
    put_unpublished(store, job_id, INDEX_FILE, index)
    return [*files, FileInfo(name=INDEX_FILE, sha256=hashlib.sha256(index).hexdigest(), size=len(index))]


class ProgressCounter:
    """Tensors and bytes written so far, passed on after each tensor."""

    def __init__(self, plan: Plan, on_progress: ProgressFn) -> None:
        self.on_progress = on_progress
        self.progress = Progress(
            tensors_done=0, tensors_total=len(plan.tensors), bytes_done=0, bytes_total=plan.totals.bytes
        )

    def add(self, planned: PlannedTensor) -> None:
        p = self.progress
        self.progress = p.model_copy(
            update={"tensors_done": p.tensors_done + 1, "bytes_done": p.bytes_done + tensor_nbytes(planned)}
        )
        self.on_progress(self.progress)


class ProgressSaver:
    """Persist progress at most every quarter second: a status poll wants freshness, not a write per tensor."""

    def __init__(self, store: JobStore, job_id: str, interval: float = 0.25) -> None:
        self.store, self.job_id, self.interval = store, job_id, interval
        self._last = 0.0

    def __call__(self, progress: Progress) -> None:
        t = time.monotonic()
        if t - self._last >= self.interval:
            self._last = t
            set_progress(self.store.records, self.job_id, progress)


__all__ = [
    "JobRun",
    "StageClock",
    "Superseded",
    "discard_unfinished",
    "execute_job",
    "fail_job",
    "publish_report",
]
