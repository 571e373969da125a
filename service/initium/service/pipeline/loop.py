"""The worker process: take queued jobs of its lane from the store, oldest first, one at a time, until told to stop.

Run by the API's supervisor in the embedded default (`initium serve`: one per lane, see [Note: lanes]
in initium.service.jobs.store), or alone:
    python -m initium.service.pipeline --data-dir DIR [--device auto|cpu|cuda] [--lane large|small]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import torch

from initium.service import logs
from initium.service.errors import InsufficientStorageError, JobNotFoundError
from initium.service.jobs.records import release_attempt, release_report, start_attempt
from initium.service.jobs.store import (
    EXIT_DEVICE_UNUSABLE,
    LANES,
    LARGE,
    SMALL,
    JobStore,
    device_problem_name,
    heartbeat_name,
)
from initium.service.materialize.sampling import warm_up
from initium.service.materialize.tensor import device_problem_here, pick_device
from initium.service.pipeline import lifecycle
from initium.service.pipeline.job import (
    YieldTo,
    discard_unfinished,
    execute_job,
    fail_job,
    failure_loc,
    failure_message,
    publish_report,
    worker_name,
)
from initium.service.summarize import stats
from initium.service.write.artifacts import atomic_write, open_artifacts

log = logging.getLogger("initium.worker")

Execute = Callable[[JobStore, str, torch.device], None]
# A job whose worker died this many times while running it is failed instead of retried, so a
# request that kills the process (out of memory, say) cannot loop forever.
MAX_ATTEMPTS = 3
# How often a report being computed looks for jobs waiting for their weights.
REPORT_YIELD_CHECK_S = 0.2


class Worker:
    """One lane's worker (see [Note: lanes]): the large lane's takes a small job only when no large
    one waits, the small lane's never takes a large one. With `parent_pid` (the supervising API), it
    dies with that process (see [Note: orphaned worker] in initium.service.pipeline.lifecycle)."""

    def __init__(self, store: JobStore, device: torch.device, poll_interval: float = 0.05, lane: str = LARGE,
                 parent_pid: int | None = None, grace_s: float = 30.0) -> None:  # fmt: skip
        self.store = store
        self.device = device
        self.poll_interval = poll_interval
        self.lane = lane
        self.parent_pid = parent_pid
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self.orphan = threading.Event()
        self.running: str | None = None  # the job being run, released if the worker must exit mid-job
        # The weights only: the report comes after, once no job waits for its weights (see _run_next).
        self.execute: Execute = functools.partial(execute_job, with_report=False)
        self._checked = 0.0

    def run(self) -> None:
        if self.parent_pid is not None:
            lifecycle.watch_parent(self.parent_pid, self.orphaned, self.stopping)
        path = warm_up(self.device)  # before the first heartbeat: /readyz waits for it
        stats.warm_up()
        if self.stopping.is_set():  # stopped, or orphaned, while warming up
            return
        # One process per lane of a data directory: a second waits here, not ready, for the first to exit.
        with lifecycle.lane_lock(self.store.root / f"worker-{self.lane}.lock", self.stopping) as held:
            if not held:
                return
            beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
            beat.start()
            log.info("worker ready on %s (%s sampler) for %s jobs, data in %s", self.device, path, self.lane,
                     self.store.root)  # fmt: skip
            while not self.stopping.is_set():
                if not self.run_pending():
                    self.stopping.wait(self.poll_interval)

    def run_pending(self) -> bool:
        """Run the queued jobs this lane takes, each step at most once (a job's weights, then its
        report: see _run_next), until none is left or the worker stops; True when there was work."""
        done: set[tuple[str, bool]] = set()
        while not self.stopping.is_set() and (step := self._run_next(done)) is not None:
            done.add(step)
        return bool(done)

    def _taken(self) -> list[str]:
        """The queued jobs this lane takes, in its order (see [Note: lanes])."""
        small = self.store.queued_ids(SMALL)
        return small if self.lane == SMALL else self.store.queued_ids(LARGE) + small

    def _run_next(self, done: set[tuple[str, bool]]) -> tuple[str, bool] | None:
        """Claim and run the first step this lane takes (see JobStore.claim): (job id, whether it was
        the report alone), or None. Jobs waiting for their weights come before reports of jobs
        already published (see [Note: weights first] in pipeline.job)."""
        steps = [(job_id, self._report_only(job_id)) for job_id in self._taken()]
        for step in sorted(steps, key=lambda step: step[1]):
            if step in done:
                continue
            job_id = step[0]
            with self.store.claim(job_id) as mine:
                if mine:
                    self._run_one(job_id)
                    return step
            if not self.store.job_dir(job_id).is_dir():  # the job is gone (evicted): nothing to run
                self.store.dequeue(job_id)
        return None

    def _run_one(self, job_id: str) -> None:
        """The job's weights (published, the report left pending), or a published job's report.
        The job stays queued until its report is ready or failed, so a worker that dies computing it
        leaves it to the next."""
        self.running = job_id
        try:
            run_one(self.store, job_id, self.device, self.execute, self.weights_waiting)
        finally:
            self.running = None
        if not self._report_only(job_id):
            self.store.dequeue(job_id)

    def _report_only(self, job_id: str) -> bool:
        """Whether the queued job only waits for its report (its weights are published)."""
        try:
            record = self.store.records.load(job_id)
        except JobNotFoundError:  # evicted meanwhile: nothing waits
            return False
        return record.state == "succeeded" and record.report_state == "pending"

    def weights_waiting(self) -> bool:
        """Whether a report being computed should stop (asked before each tensor it reads): this
        worker is stopping, or a job this lane takes is queued, waiting for a worker to write its
        weights. A job another worker is running does not count (the report runs beside it). The
        queue is listed at most every REPORT_YIELD_CHECK_S."""
        if self.stopping.is_set():
            return True
        now = time.monotonic()
        if now - self._checked < REPORT_YIELD_CHECK_S:
            return False
        self._checked = now
        return any(self._waits_for_weights(job_id) for job_id in self._taken() if job_id != self.running)

    def _waits_for_weights(self, job_id: str) -> bool:
        try:
            return self.store.records.load(job_id).state == "queued"
        except JobNotFoundError:  # evicted meanwhile: nothing waits
            return False

    def _release(self) -> None:
        """The running job goes back to the queue uncounted: this worker exits on purpose, mid-job."""
        if (job_id := self.running) is not None:
            release_attempt(self.store.records, job_id, worker_name())
            release_report(self.store.records, job_id)  # a report cut short: that run uncounted too

    def _heartbeat(self) -> None:
        """Every second: the lane's heartbeat file, holding this pid (the supervisor tells its own
        child's beat from another's), written again whenever it could not be. A beat that fails (a
        full volume: round two of issue 16, where the thread died and /readyz stayed 'down' after the
        space came back) is logged once and retried, so readiness returns by itself."""
        path = self.store.root / heartbeat_name(self.lane)
        written, warned = False, False
        while not self.stopping.is_set():
            try:
                if written:
                    path.touch()
                else:
                    atomic_write(path, str(os.getpid()).encode())
                    written = True
                warned = False
            except (OSError, InsufficientStorageError) as exc:
                written = False
                if not warned:
                    log.warning("heartbeat not written (%s); retrying every second", exc)
                    warned = True
            self.stopping.wait(1.0)

    def stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """The running job may finish within grace_s; past it a supervised worker (with parent_pid)
        releases the job (queued again, the attempt uncounted) and exits, just before its supervisor
        would kill it."""
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.orphaned()  # the SIGTERM of PR_SET_PDEATHSIG: the API is gone
            return
        if not self.stopping.is_set():
            self.stopping.set()
            if self.parent_pid is not None:  # a supervised process of its own: never a test's or a caller's
                lifecycle.exit_after(max(self.grace_s - 1.0, 0.5 * self.grace_s), self._release)

    def orphaned(self) -> None:
        """The API that started this worker is gone: take no new job and exit within
        lifecycle.ORPHAN_EXIT_S, a running job cut short (see [Note: orphaned worker] in
        initium.service.pipeline.lifecycle)."""
        if self.orphan.is_set():
            return
        self.orphan.set()
        log.warning("the API (pid %s) is gone: exiting; a running job stays queued for the next worker",
                    self.parent_pid)  # fmt: skip
        self.stopping.set()
        lifecycle.exit_after(lifecycle.ORPHAN_EXIT_S, self._release)


def run_one(
    store: JobStore, job_id: str, device: torch.device, execute: Execute = execute_job, yield_to: YieldTo | None = None
) -> None:
    """The task both engines run: one attempt at a job, unless it is finished or out of attempts.
    `execute` is execute_job, or with Celery the fan-out coordinator that may split it into parts.
    A succeeded job whose report is pending gets its report computed (`yield_to`: see publish_report)."""
    worker = worker_name()
    record = start_attempt(store.records, job_id, worker, MAX_ATTEMPTS)
    if record.state == "succeeded" and record.report_state == "pending":
        # Its weights are published and its report is not: the embedded worker computes reports
        # once no job waits for its weights; or the worker computing it died, or the report failed
        # and the request was submitted again (see [Note: weights first] in pipeline.job).
        _compute_report(store, job_id, device, yield_to)
        return
    if record.state == "failed":
        # Failed now for having stopped its workers MAX_ATTEMPTS times (or earlier): the attempts
        # that died left their temporary files and parts, which only this transition can remove.
        discard_unfinished(store, job_id)
    if record.state != "running":
        return
    token = logs.job_id.set(job_id)
    try:
        started = time.perf_counter()
        log.info("job started (attempt %d) on %s", record.attempts, worker)
        try:
            execute(store, job_id, device)
        except Exception as exc:  # a job this worker took and could not run fails with the reason
            log.exception("job could not run on %s", worker)
            fail_job(store, job_id, failure_message(exc, store.root), loc=failure_loc(exc))
        log.info("job %s in %.3f s", store.records.load(job_id).state, time.perf_counter() - started)
    finally:
        logs.job_id.reset(token)


def _compute_report(store: JobStore, job_id: str, device: torch.device, yield_to: YieldTo | None) -> None:
    """A published job's report alone (see run_one), logged with the job's id and how it ended."""
    token = logs.job_id.set(job_id)
    try:
        started = time.perf_counter()
        publish_report(store, job_id, None, device, yield_to)
        log.info("report %s in %.3f s", store.records.load(job_id).report_state, time.perf_counter() - started)
    finally:
        logs.job_id.reset(token)


def device_usable(data_dir: Path, lane: str, device: str) -> bool:
    """Whether this worker can compute on `device`. When it cannot, why is left in the lane's
    device-problem file for /readyz (issue 16: a worker on cuda:0 without a GPU reported ready and
    took jobs it could not run), and the worker exits EXIT_DEVICE_UNUSABLE without taking a job."""
    problem_file = data_dir / device_problem_name(lane)
    problem = device_problem_here(device)
    if problem is None:
        problem_file.unlink(missing_ok=True)
        return True
    message = (
        f"this host cannot use device {device!r} for the {lane}-job lane ({problem}); set INITIUM_DEVICE "
        "(or INITIUM_SMALL_LANE_DEVICE) to a device it has: auto picks cuda when present, else cpu"
    )
    log.error("%s", message)
    atomic_write(problem_file, message.encode())
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="initium-worker", description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--artifact-store", default=os.environ.get("INITIUM_ARTIFACT_STORE", "local"),
                        help="local (under --data-dir) or s3://bucket/prefix")  # fmt: skip
    parser.add_argument("--s3-endpoint-url", default=os.environ.get("INITIUM_S3_ENDPOINT_URL"))
    parser.add_argument("--lane", choices=LANES, default=LARGE,
                        help="large (default: every job, large ones first) or small (small jobs only)")  # fmt: skip
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the API) is gone")
    parser.add_argument("--grace-s", type=float, default=30.0, help="once orphaned, how long a job may finish")
    args = parser.parse_args(argv)
    logs.configure()
    if args.parent_pid is not None and not lifecycle.die_with_parent(args.parent_pid):
        log.warning("the API (pid %d) exited before this worker started; exiting", args.parent_pid)
        return 0
    if not device_usable(args.data_dir, args.lane, args.device):
        return EXIT_DEVICE_UNUSABLE
    artifacts = open_artifacts(args.artifact_store, args.data_dir, args.s3_endpoint_url)
    store = JobStore(args.data_dir, artifacts=artifacts)
    worker = Worker(store, pick_device(args.device), args.poll_interval, args.lane, args.parent_pid, args.grace_s)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
    if worker.orphan.is_set():
        # Nobody waits for an orphan's exit status, and tearing down torch's interpreter state can take
        # seconds on a busy host: the lane's lock is released the moment the process ends.
        logging.shutdown()
        os._exit(0)
    return 0


__all__ = ["MAX_ATTEMPTS", "Worker", "main", "run_one"]
