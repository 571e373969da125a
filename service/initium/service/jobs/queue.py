"""How accepted jobs reach workers: the store's own queue (embedded) or Celery over Redis (scaled out).

Both deployments run the same task code (initium.service.pipeline.loop.run_one). The API publishes by
task name only, so this module, which the API imports, never imports torch or the worker.

[Note: outbox] A job is persisted with a queue marker before anything is published. The embedded
worker consumes the markers directly. With Celery, the marker is an outbox entry: it is removed
once the broker has the message, and the API publishes whatever is left at start, so a crash
between "persisted" and "published" loses nothing. The worst a re-publish can cause is a
duplicate run, which is harmless: every attempt writes under its own temporary names and renames
identical bytes into place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from initium.service.errors import StoreUnavailableError
from initium.service.jobs.store import LARGE, SMALL, JobStore

if TYPE_CHECKING:  # imported when used: local mode and the embedded worker submit jobs without Celery
    from celery import Celery

log = logging.getLogger("initium.engine")

RUN_JOB = "initium.run_job"
# [Note: lanes] in jobs.store, under Celery: one queue per lane. Small jobs keep the queue every job
# used before lanes existed, so a worker started with the old `-Q initium` still serves them.
QUEUE = "initium"
LARGE_QUEUE = "initium.large"
QUEUES = {SMALL: QUEUE, LARGE: LARGE_QUEUE}


def make_celery(broker_url: str, visibility_timeout_s: float) -> Celery:
    """The Celery app both sides share: only the settings that make 'no job lost' true on Redis.

    acks_late + reject_on_worker_lost: a message is acknowledged only once its task has returned, and a
    killed pool process sends it back to the queue at once (the attempt cap in the job's record stops a job
    that kills every worker from looping). prefetch 1: a worker reserves only the job it runs. The
    visibility timeout must exceed the longest job, or Redis redelivers a job that is still running.
    JSON only: nothing is ever unpickled. No result backend: results are artifacts and job records.
    """
    from celery import Celery

    app = Celery("initium", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_transport_options={"visibility_timeout": visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class Dispatcher(Protocol):
    def publish(self, job_id: str) -> None: ...
    def readiness(self, count_workers: bool = True) -> dict[str, object]: ...


@dataclass
class StoreQueue:
    """Embedded: the queue marker written with the job is the whole queue; the supervised worker
    process consumes it. Readiness is the supervisor's (see routes.health)."""

    def publish(self, job_id: str) -> None:
        return None

    def readiness(self, count_workers: bool = True) -> dict[str, object]:
        return {}


@dataclass
class CeleryQueue:
    """Scaled out: publish `initium.run_job(job_id)` to Redis; see [Note: outbox]."""

    store: JobStore
    app: Celery
    ping_timeout_s: float = 1.0

    def publish(self, job_id: str) -> None:
        """To the queue of the lane the job was routed to at submit (its outbox marker's)."""
        self.app.send_task(RUN_JOB, args=[job_id], queue=QUEUES[self.store.lane_of(job_id)])
        self.store.dequeue(job_id)

    def publish_outbox(self) -> int:
        ids = self.store.queued_ids()
        for job_id in ids:
            self.publish(job_id)
        if ids:
            log.info("published %d jobs left in the outbox", len(ids))
        return len(ids)

    def readiness(self, count_workers: bool = True) -> dict[str, object]:
        """The broker answers and at least one worker replies to a ping (a prefork parent answers
        while its pool process computes). Counting every worker waits the whole ping timeout;
        without counting, the first reply ends the wait (what a metrics scrape needs). With the
        records in Redis, `records` says ok, volatile (Redis does not persist them: still ready) or
        down (<cause>). Never raises: a broker that fails twice is `down (<cause>)` (issue 16: a
        stale pooled connection after a Redis restart answered /readyz with a 500)."""
        from initium.service.jobs.records_redis import RedisJobRecords  # redis-py: only Celery needs it

        body: dict[str, object] = {}
        if isinstance(self.store.records, RedisJobRecords):
            try:
                body["records"] = self.store.records.readiness()
            except StoreUnavailableError as exc:
                log.warning("not ready: %s", exc.message)
                body["records"] = f"down ({exc.reason})"
        for attempt in (1, 2):  # once more on a new connection: a restart may cut the first one
            try:  # a connection of its own, not the app's pool, whose may predate a Redis restart
                with self.app.connection_for_write() as connection:
                    connection.ensure_connection(max_retries=1, timeout=self.ping_timeout_s)
                    limit = None if count_workers else 1
                    replies = self.app.control.ping(timeout=self.ping_timeout_s, limit=limit, connection=connection)
                return body | {"broker": "ok", "workers": len(replies or [])}
            except Exception as exc:  # any transport error means the same thing here: not ready
                if attempt == 2:
                    return body | {"broker": f"down ({type(exc).__name__})", "workers": 0}
        raise AssertionError("unreachable")
