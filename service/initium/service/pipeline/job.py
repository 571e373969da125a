"""The job task: plan -> materialize -> summarize -> write, tensor by tensor, then the report."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import safetensors
import torch

import initium.service
from initium.schemas import report as wire
from initium.schemas.errors import ErrorInfo
from initium.schemas.job import FileInfo, Progress
from initium.schemas.plan import Plan, PlannedTensor, Shard
from initium.schemas.request import InitRequest
from initium.service.identity import ALGORITHM
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.store import HASHED, REPORT, JobStore, atomic_write, attempt_suffix, now
from initium.service.materialize.tensor import materialize
from initium.service.model.lsuv import lsuv_scales
from initium.service.model.probe import collect_warnings, run_probe
from initium.service.plan.distributions import Distribution, planned_distribution
from initium.service.plan.output import INDEX_FILE, tensor_nbytes
from initium.service.plan.planner import Limits, make_plan
from initium.service.summarize.checks import fit, flags, spectral
from initium.service.summarize.stats import Measured, measure
from initium.service.write.safetensors import SafetensorsStreamWriter

# The API refused oversized requests already; the worker generates whatever was accepted.
NO_LIMITS = Limits(max_parameters=2**62, max_tensors=2**62)
ProgressFn = Callable[[Progress], None]


@dataclass
class StageClock:
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("plan", "lsuv", "materialize", "summarize", "write", "propagate"), 0.0)
    )

    def add(self, stage: str, since: float) -> float:
        t = time.perf_counter()
        self.seconds[stage] += t - since
        return t


def execute_job(store: JobStore, job_id: str, device: torch.device) -> None:
    """Run one job to a terminal state; any failure becomes a failed job with the reason."""
    try:
        files = _generate(store, job_id, device, ProgressSaver(store, job_id))
    except Exception as exc:  # the job fails; the worker lives on to run the next one
        if store.load(job_id).state == "succeeded":
            return  # a duplicate attempt finished first (its cleanup removed this one's files)
        error = ErrorInfo(type="job_failed", message=failure_message(exc, store.job_dir(job_id)))
        store.save(store.load(job_id).model_copy(update={"state": "failed", "error": error}))
        return
    mark_succeeded(store, job_id, files)


def mark_succeeded(store: JobStore, job_id: str, files: list[FileInfo]) -> None:
    """The job's record once its files are in place (the last file is the main one: the weights, or
    the shard index); temporary files of attempts that died go with it."""
    remove_stale_partials(store.job_dir(job_id))
    record, main = store.load(job_id), files[-1]
    progress = record.progress.model_copy(
        update={"tensors_done": record.progress.tensors_total, "bytes_done": record.progress.bytes_total}
    )
    update = {"state": "succeeded", "sha256": main.sha256, "size": main.size, "files": files, "progress": progress}
    record_hashed(store, job_id, files)
    store.save(record.model_copy(update=update))


def record_hashed(store: JobStore, job_id: str, files: list[FileInfo]) -> None:
    """Stamp each file this worker hashed as it wrote it, so the API can serve it without hashing it
    again (jobs.VerifiedFiles): a file whose size, mtime and inode still match has not been touched."""
    stamps = {}
    for f in files:
        st = store.artifact(job_id, f.name).stat()
        stamps[f.name] = {"sha256": f.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    atomic_write(store.artifact(job_id, HASHED), json.dumps(stamps).encode())


def failure_message(exc: Exception, job_dir: Path) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return (
            f"the store could not take the artifact: {exc.strerror} (errno {exc.errno}) writing under {job_dir}; "
            "free space or fix the volume's permissions, then resubmit the request (nothing partial was kept)"
        )
    return f"{type(exc).__name__}: {exc}"


def remove_stale_partials(job_dir: Path) -> None:
    """Temporary files of attempts that died (killed workers) go once the job has its artifact."""
    for path in job_dir.glob(".*.partial"):
        path.unlink(missing_ok=True)


def _generate(store: JobStore, job_id: str, device: torch.device, on_progress: ProgressFn) -> list[FileInfo]:
    """Write every output file under this attempt's temporary names, then the report, then rename
    them into place; a failed attempt leaves none of its files behind."""
    # Temporary names are this attempt's own: a redelivered job may run twice at once (see
    # [Note: outbox] in initium.service.jobs.queue), and each attempt renames only its own files.
    attempt = attempt_suffix()
    partials: dict[str, Path] = {}
    try:
        return _generate_attempt(store, job_id, device, on_progress, partials, attempt)
    except BaseException:
        for path in partials.values():
            path.unlink(missing_ok=True)
        raise


def _generate_attempt(
    store: JobStore, job_id: str, device: torch.device, on_progress: ProgressFn, partials: dict[str, Path],
    attempt: str,
) -> list[FileInfo]:  # fmt: skip
    clock = StageClock()
    t = start = time.perf_counter()
    request = store.load_request(job_id)
    plan = make_plan(request, NO_LIMITS, PresetStore(store.root).all())
    t = clock.add("plan", t)
    scales, lsuv = lsuv_scales(request, plan, device)
    clock.add("lsuv", t)
    partials.update({shard.file: store.artifact(job_id, f".{shard.file}.{attempt}") for shard in plan.shards})
    stats: list[wire.TensorStats] = []
    files = _write_shards(plan, request, device, scales, partials, stats, clock, on_progress)
    if request.output.format == "sharded":
        partials[INDEX_FILE] = store.artifact(job_id, f".{INDEX_FILE}.{attempt}")
        files.append(write_index(plan, partials[INDEX_FILE]))
    by_tensor = {name: partials[shard.file] for shard in plan.shards for name in shard.tensors}
    return finish_job(store, job_id, request, plan, device, files, by_tensor, stats, clock, start, lsuv, partials)


def finish_job(
    store: JobStore, job_id: str, request: InitRequest, plan: Plan, device: torch.device, files: list[FileInfo],
    by_tensor: dict[str, Path], stats: list[wire.TensorStats], clock: StageClock, start: float,
    lsuv: list[wire.LsuvLayer], partials: dict[str, Path],
) -> list[FileInfo]:  # fmt: skip
    """The probe over the written files, the report, then every file renamed into place (the index
    last, so a reader never finds it before its shards). `partials`: final name -> temporary path."""
    t = time.perf_counter()
    propagation = run_probe(request, plan, by_tensor, device)
    clock.add("propagate", t)
    timings = wire.StageTimings(**clock.seconds, total=time.perf_counter() - start)
    main = files[-1]
    artifact = wire.ArtifactInfo(sha256=main.sha256, size=main.size, files=files)
    report = build_report(plan, request, stats, artifact, device, timings).model_copy(
        update={
            "propagation": propagation,
            "warnings": collect_warnings(plan, stats, propagation),
            "lsuv": lsuv or None,
        }
    )
    atomic_write(store.artifact(job_id, REPORT), report.model_dump_json(indent=1).encode())
    for f in files:
        partials[f.name].replace(store.artifact(job_id, f.name))
    return files


def _write_shards(
    plan: Plan, request: InitRequest, device: torch.device, scales: dict[str, float], partials: dict[str, Path],
    stats: list[wire.TensorStats], clock: StageClock, on_progress: ProgressFn,
) -> list[FileInfo]:  # fmt: skip
    files, progress = [], Progress(tensors_done=0, tensors_total=len(plan.tensors), bytes_done=0,
                                   bytes_total=plan.totals.bytes)  # fmt: skip

    def tensor_written(planned: PlannedTensor) -> None:
        nonlocal progress
        progress = progress.model_copy(update={"tensors_done": progress.tensors_done + 1,
                                               "bytes_done": progress.bytes_done + tensor_nbytes(planned)})  # fmt: skip
        on_progress(progress)

    for shard in plan.shards:
        files.append(write_tensors(plan, request, device, scales, shard, partials[shard.file], stats, clock,
                                   tensor_written))  # fmt: skip
    return files


def write_tensors(
    plan: Plan, request: InitRequest, device: torch.device, scales: dict[str, float], shard: Shard, path: Path,
    stats: list[wire.TensorStats], clock: StageClock, tensor_written: Callable[[PlannedTensor], None],
    with_header: bool = True,
) -> FileInfo:  # fmt: skip
    """Materialize, summarize and write `shard`'s tensors to `path`, one at a time: a safetensors
    file, or (with_header=False) only their data, a part of a file assembled later."""
    by_name = {t.name: t for t in plan.tensors}
    tensors = [by_name[name] for name in shard.tensors]
    t = time.perf_counter()
    with SafetensorsStreamWriter(path, tensors, metadata_for(plan, request), with_header) as writer:
        for planned in tensors:
            values = materialize(planned, request.seed, device, scales.get(planned.name, 1.0))
            t = clock.add("materialize", t)
            stats.append(tensor_stats(planned, values))
            t = clock.add("summarize", t)
            writer.write(planned.name, values)
            del values
            t = clock.add("write", t)
            tensor_written(planned)
        return FileInfo(name=shard.file, sha256=writer.close(), size=writer.bytes_written)


def write_index(plan: Plan, path: Path) -> FileInfo:
    """model.safetensors.index.json as huggingface_hub writes it: total_size and the weight map."""
    index = {
        "metadata": {"total_size": sum(shard.bytes for shard in plan.shards)},
        "weight_map": {name: shard.file for shard in plan.shards for name in shard.tensors},
    }
    data = (json.dumps(index, indent=2) + "\n").encode()
    atomic_write(path, data)
    return FileInfo(name=INDEX_FILE, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def metadata_for(plan: Plan, request: InitRequest) -> dict[str, str]:
    # safetensors metadata is str -> str only (huggingface/safetensors#278); transformers requires
    # format=pt to load the file.
    return {
        "format": "pt",
        "initium.request_id": plan.request_id,
        "initium.seed": str(request.seed),
        "initium.algorithm": ALGORITHM.id,
        "initium.algorithm_version": str(ALGORITHM.version),
    }


def _scheme_label(planned: PlannedTensor) -> str:
    if planned.init is not None:
        return planned.init.scheme
    if planned.parts:
        return "mixed: " + ", ".join(sorted({p.init.scheme for p in planned.parts if p.init is not None}))
    return f"buffer:{planned.role}"


def tensor_stats(planned: PlannedTensor, values: torch.Tensor) -> wire.TensorStats:
    m = measure(values)
    dist = None if planned.distribution is None else planned_distribution(planned)
    checks = _checks(planned, values, m, dist)
    return wire.TensorStats(
        **checks,
        name=planned.name,
        shape=planned.shape,
        slice=planned.slice,
        dtype=planned.dtype,
        role=planned.role,
        scheme=_scheme_label(planned),
        params=planned.init,
        rule=planned.rule,
        fan_in=planned.fan_in,
        fan_out=planned.fan_out,
        expected_mean=planned.expected_mean,
        expected_std=planned.expected_std,
        mean=m.mean,
        std=m.std,
        min=m.min,
        max=m.max,
        abs_max=m.abs_max,
        zero_fraction=m.zero_fraction,
        nan_count=m.nan_count,
        inf_count=m.inf_count,
    )


class _Checks(TypedDict, total=False):
    frobenius_norm: float
    power_sums: wire.PowerSums
    fit: wire.FitCheck | None
    spectral: wire.SpectralStats | None
    flags: list[str]


def _checks(planned: PlannedTensor, values: torch.Tensor, m: Measured, dist: Distribution | None) -> _Checks:
    """The report's deeper checks; packed tensors with several laws and buffers get moments only."""
    power = wire.PowerSums(n=m.n_finite, s1=m.power_sums[0], s2=m.power_sums[1], s3=m.power_sums[2], s4=m.power_sums[3])
    checks = _Checks(frobenius_norm=math.sqrt(m.power_sums[1]), power_sums=power)
    if planned.role in ("weight", "bias"):
        checks["fit"] = fit(values, dist, planned.dtype)
        checks["spectral"] = spectral(values, dist, m.power_sums[1]) if planned.role == "weight" else None
        checks["flags"] = flags(m.n_finite, m.mean, m.std, m.central_m4, dist, planned.dtype)
    return checks


def build_report(
    plan: Plan,
    request: InitRequest,
    stats: list[wire.TensorStats],
    artifact: wire.ArtifactInfo,
    device: torch.device,
    timings: wire.StageTimings,
) -> wire.Report:
    totals = wire.ReportTotals(
        tensors=len(stats),
        parameters=plan.totals.parameters,
        bytes=sum(tensor_nbytes(t) for t in plan.tensors),
        nan_count=sum(s.nan_count for s in stats),
        inf_count=sum(s.inf_count for s in stats),
    )
    provenance = wire.Provenance(
        request_id=plan.request_id,
        seed=request.seed,
        dtype=request.dtype,
        algorithm=plan.algorithm,
        device=_device_name(device),
        versions={
            "initium": initium.service.__version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "python": platform.python_version(),
        },
        timings=timings,
        created_at=now(),
    )
    return wire.Report(tensors=stats, totals=totals, artifact=artifact, provenance=provenance)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"


class ProgressSaver:
    """Persist progress at most every quarter second: a status poll wants freshness, not a write per tensor."""

    def __init__(self, store: JobStore, job_id: str, interval: float = 0.25) -> None:
        self.store, self.job_id, self.interval = store, job_id, interval
        self._last = 0.0

    def __call__(self, progress: Progress) -> None:
        t = time.monotonic()
        if t - self._last >= self.interval:
            self._last = t
            self.store.save(self.store.load(self.job_id).model_copy(update={"progress": progress}))


__all__ = ["execute_job"]
