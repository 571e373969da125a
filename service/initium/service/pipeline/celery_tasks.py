"""The Celery worker: `initium.run_job` bound to the same run_one the embedded worker loops over,
and the part and finalize tasks of a job fanned out over several workers.

Started by `initium worker` (prefork, one pool process, prefetch 1; one worker per GPU). The parent
process imports torch but never touches CUDA; the pool process picks its device on first use, so
a CUDA context is never inherited across fork.
"""

from __future__ import annotations

import functools
import logging

import torch
from celery.signals import worker_process_init
from kombu.utils.url import maybe_sanitize_url

from initium.service.config import Settings
from initium.service.jobs.queue import QUEUE, RUN_JOB, make_celery
from initium.service.jobs.records import open_records
from initium.service.jobs.store import JobStore
from initium.service.materialize.sampling import warm_up
from initium.service.materialize.tensor import pick_device
from initium.service.pipeline import fanout
from initium.service.pipeline.loop import run_one
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


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _warm_up(**_: object) -> None:
    """In each pool process (never the parent, which must not touch CUDA): compile the sampler now."""
    log.info("pool process sampler: %s on %s", warm_up(_device()), _device())
    stats.warm_up()


def _publish(name: str, args: list[object]) -> None:
    app.send_task(name, args=args, queue=QUEUE)


@app.task(name=RUN_JOB, ignore_result=True)  # type: ignore[untyped-decorator]
def run_job(job_id: str) -> None:
    """A job: run here, or split into parts for every worker (see [Note: fan-out])."""
    coordinate = functools.partial(fanout.coordinate, part_bytes=settings.part_bytes, publish=_publish)
    run_one(_store(), job_id, _device(), coordinate)


@app.task(name=fanout.RUN_PART, ignore_result=True)  # type: ignore[untyped-decorator]
def run_part(job_id: str, k: int) -> None:
    fanout.run_part(_store(), job_id, k, _device(), settings.part_bytes, _publish)


@app.task(name=fanout.FINALIZE, ignore_result=True)  # type: ignore[untyped-decorator]
def finalize(job_id: str) -> None:
    fanout.finalize(_store(), job_id, _device(), settings.part_bytes)


def worker_argv(name: str, loglevel: str = "INFO") -> list[str]:
    return [
        "worker", "--pool=prefork", "--concurrency=1", "--prefetch-multiplier=1", "-Q", QUEUE, "-n", name,
        f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def main(name: str) -> int:
    """Run a worker until SIGTERM (warm shutdown: the running job finishes first)."""
    log.info("celery worker %s: broker %s, data in %s, device %s", name, maybe_sanitize_url(settings.broker_url),
             settings.data_dir, settings.device)  # fmt: skip
    app.worker_main(worker_argv(name))
    return 0
