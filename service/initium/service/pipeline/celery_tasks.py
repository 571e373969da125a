"""The Celery worker: `initium.run_job` bound to the same run_one the embedded worker loops over,
and the part and finalize tasks of a job fanned out over several workers.

Started by `initium worker` (prefork, one pool process, prefetch 1; one worker per GPU). The parent
process imports torch but never touches CUDA; the pool process picks its device on first use, so
a CUDA context is never inherited across fork.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
import sys

import torch
from celery.signals import worker_process_init
from kombu.utils.url import maybe_sanitize_url

from initium.service.config import Settings
from initium.service.jobs.queue import LARGE_QUEUE, QUEUE, QUEUES, RUN_JOB, make_celery
from initium.service.jobs.records import open_records, start_attempt
from initium.service.jobs.store import JobStore, lane_for
from initium.service.materialize.sampling import warm_up
from initium.service.materialize.tensor import pick_device
from initium.service.pipeline import fanout
from initium.service.pipeline.job import fail_job
from initium.service.pipeline.loop import MAX_ATTEMPTS, run_one
from initium.service.summarize import stats

log = logging.getLogger("initium.worker")
settings = Settings()
if settings.broker_url is None:
    raise RuntimeError("INITIUM_BROKER_URL is not set: a Celery worker needs the broker (e.g. redis://host:6379/0)")
app = make_celery(settings.broker_url, settings.visibility_timeout_s)


@functools.cache
def _device() -> torch.device:
    return pick_device(settings.device)


@functools.cache
def _store() -> JobStore:
    """The jobs, their records in Redis beside the broker (the API reads the same ones)."""
    return JobStore(settings.data_dir, open_records(settings.broker_url, settings.data_dir), settings.artifacts())


# Why this pool process cannot run jobs (its warm-up failed), or None; run_job fails what it takes with it.
_unusable: str | None = None


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _warm_up(**_: object) -> None:
    """In each pool process (never the parent, which must not touch CUDA): compile the sampler now."""
    global _unusable
    try:
        log.info("pool process sampler: %s on %s", warm_up(_device()), _device())
        stats.warm_up()
    except Exception as exc:  # Celery would log it and run jobs anyway: remember why they cannot run
        _unusable = f"its warm-up on {settings.device} failed: {type(exc).__name__}: {exc}"
        log.exception("pool process cannot run jobs")


def _publish(name: str, args: list[object]) -> None:
    """A fan-out part or finalize of job args[0], on its job's queue: a large job's parts never wait
    behind small jobs, nor small jobs behind them (see [Note: lanes] in jobs.store)."""
    size = _store().records.load(str(args[0])).progress  # the plan's totals, set at submit
    lane = lane_for(size.bytes_total, settings.large_job_bytes, size.tensors_total, settings.large_job_tensors)
    app.send_task(name, args=args, queue=QUEUES[lane])


@app.task(name=RUN_JOB, ignore_result=True)  # type: ignore[untyped-decorator]
def run_job(job_id: str) -> None:
    """A job: run here, or split into parts for every worker (see [Note: fan-out])."""
    coordinate = functools.partial(fanout.coordinate, part_bytes=settings.part_bytes, publish=_publish)
    store = _store()
    try:
        if _unusable is not None:
            raise RuntimeError(_unusable)
        device = _device()
    except Exception as exc:
        _refuse(store, job_id, exc)
        return
    run_one(store, job_id, device, coordinate)


def _refuse(store: JobStore, job_id: str, exc: Exception) -> None:
    """A job this worker took and cannot run (its device or warm-up failed) is failed with the
    reason, as an attempt of its own: it never stays queued with no attempt and no error (issue 16)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if start_attempt(store.records, job_id, worker, MAX_ATTEMPTS).state == "running":
        reason = f"worker {worker} could not run the job: {type(exc).__name__}: {exc}; resubmit the request"
        fail_job(store, job_id, reason)


@app.task(name=fanout.RUN_PART, ignore_result=True)  # type: ignore[untyped-decorator]
def run_part(job_id: str, k: int) -> None:
    fanout.run_part(_store(), job_id, k, _device(), settings.part_bytes, _publish)


@app.task(name=fanout.FINALIZE, ignore_result=True)  # type: ignore[untyped-decorator]
def finalize(job_id: str) -> None:
    fanout.finalize(_store(), job_id, _device(), settings.part_bytes)


def worker_argv(name: str, queues: tuple[str, ...] = (LARGE_QUEUE, QUEUE), loglevel: str = "INFO") -> list[str]:
    return [
        "worker", "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=1", "-Q", ",".join(queues),
        "-n", name, f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


# Run in a child process: it may create a CUDA context, which the prefork parent must never hold
# (a context does not survive fork). It prints why the device cannot be used and exits 1.
_PROBE = """
import sys
from initium.service.materialize.tensor import device_problem_here
problem = device_problem_here(sys.argv[1])
print(problem or "")
sys.exit(1 if problem else 0)
"""


def device_problem(preference: str, timeout_s: float = 300.0) -> str | None:
    """Why this host cannot compute on `preference` (cuda:0 without a GPU, cuda:3 on a host with
    two), or None when a tensor op there succeeds. Asked in a probe subprocess: in the parent,
    even torch.cuda.is_available() initializes the CUDA driver (unless PYTORCH_NVML_BASED_CUDA_CHECK
    is set), which its forked pool process must not inherit. cpu and auto (cpu without a GPU)
    need no probe."""
    if not preference.startswith("cuda"):
        return None
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, preference], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return f"the device probe did not answer within {timeout_s:.0f} s"
    if probe.returncode == 0:
        return None
    return probe.stdout.strip() or f"the device probe exited with {probe.returncode}: {probe.stderr.strip()[-300:]}"


def main(name: str, queues: tuple[str, ...] = (LARGE_QUEUE, QUEUE)) -> int:
    """Run a worker consuming `queues` until SIGTERM (warm shutdown: the running job finishes first). A device this host
    cannot use is refused before the worker starts (exit 3): it never joins the queue or answers a ping."""
    problem = device_problem(settings.device)
    if problem is not None:
        message = (
            f"initium worker: error: this host cannot use device {settings.device!r} (INITIUM_DEVICE or --device): "
            f"{problem}; start the worker with a device it has (auto picks cuda when present, else cpu)"
        )
        log.error("%s", message)
        sys.stderr.write(message + "\n")  # also plainly, for whoever started it by hand
        return 3
    log.info("celery worker %s: broker %s, data in %s, device %s, queues %s", name,
             maybe_sanitize_url(settings.broker_url), settings.data_dir, settings.device, ",".join(queues))  # fmt: skip
    app.worker_main(worker_argv(name, queues))
    return 0
