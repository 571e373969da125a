"""The worker process: take queued jobs from the store, oldest first, one at a time, until told to stop.

Run by the API's supervisor in the embedded default (`initium serve`), or alone:
    python -m initium.service.pipeline --data-dir DIR [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import torch

from initium.service import logs
from initium.service.jobs.records import start_attempt
from initium.service.jobs.store import HEARTBEAT, JobStore
from initium.service.materialize.sampling import warm_up
from initium.service.materialize.tensor import pick_device
from initium.service.pipeline.job import execute_job
from initium.service.summarize import stats
from initium.service.write.artifacts import open_artifacts

log = logging.getLogger("initium.worker")

Execute = Callable[[JobStore, str, torch.device], None]
# A job whose worker died this many times while running it is failed instead of retried, so a
# request that kills the process (out of memory, say) cannot loop forever.
MAX_ATTEMPTS = 3


class Worker:
    def __init__(self, store: JobStore, device: torch.device, poll_interval: float = 0.05) -> None:
        self.store = store
        self.device = device
        self.poll_interval = poll_interval
        self.stopping = threading.Event()

    def run(self) -> None:
        path = warm_up(self.device)  # before the first heartbeat: /readyz waits for it
        stats.warm_up()
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker ready on %s (%s sampler), data in %s", self.device, path, self.store.root)
        while not self.stopping.is_set():
            if not self.run_pending():
                self.stopping.wait(self.poll_interval)

    def run_pending(self) -> bool:
        """Run every queued job once; True when there was work."""
        ids = self.store.queued_ids()
        for job_id in ids:
            if self.stopping.is_set():
                break
            self._run_one(job_id)
        return bool(ids)

    def _run_one(self, job_id: str) -> None:
        run_one(self.store, job_id, self.device)
        self.store.dequeue(job_id)

    def _heartbeat(self) -> None:
        path = self.store.root / HEARTBEAT
        while not self.stopping.is_set():
            path.touch()
            self.stopping.wait(1.0)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        # The running job finishes; a job cut short by a harder stop stays queued and resumes.
        self.stopping.set()


def run_one(store: JobStore, job_id: str, device: torch.device, execute: Execute = execute_job) -> None:
    """The task both engines run: one attempt at a job, unless it is finished or out of attempts.
    `execute` is execute_job, or with Celery the fan-out coordinator that may split it into parts."""
    worker = f"{socket.gethostname()}:{os.getpid()}"
    record = start_attempt(store.records, job_id, worker, MAX_ATTEMPTS)
    if record.state != "running":
        return  # finished, or failed now for having stopped its workers MAX_ATTEMPTS times
    token = logs.job_id.set(job_id)
    try:
        started = time.perf_counter()
        log.info("job started (attempt %d) on %s", record.attempts, worker)
        execute(store, job_id, device)
        log.info("job %s in %.3f s", store.records.load(job_id).state, time.perf_counter() - started)
    finally:
        logs.job_id.reset(token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="initium-worker", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--artifact-store", default=os.environ.get("INITIUM_ARTIFACT_STORE", "local"),
                        help="local (under --data-dir) or s3://bucket/prefix")  # fmt: skip
    parser.add_argument("--s3-endpoint-url", default=os.environ.get("INITIUM_S3_ENDPOINT_URL"))
    args = parser.parse_args(argv)
    logs.configure()
    artifacts = open_artifacts(args.artifact_store, args.data_dir, args.s3_endpoint_url)
    worker = Worker(JobStore(args.data_dir, artifacts=artifacts), pick_device(args.device), args.poll_interval)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
    return 0


__all__ = ["HEARTBEAT", "MAX_ATTEMPTS", "Worker", "main", "run_one"]
