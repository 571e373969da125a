"""Prometheus metrics of the API process (prometheus_client, one registry per app).

Job durations and bytes come from the job records, not from the workers' memory: workers may be
other processes or other hosts, and the records are what every one of them writes.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from initium.service.jobs.store import JobStore

# Seconds from submission to a finished job: small MLPs take milliseconds, 7B models minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "initium_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.submissions = Counter(
            "initium_submissions",
            "POST /v1/initializations by outcome (existing_succeeded: a cache hit)",
            ["outcome"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "initium_cache_hits", "requests answered by an existing job's files", registry=self.registry
        )
        self.queue_depth = Gauge("initium_queue_depth", "jobs queued or running", registry=self.registry)
        self.worker_up = Gauge("initium_worker_up", "1 when a worker can take jobs", registry=self.registry)
        self.job_duration = Histogram(
            "initium_job_duration_seconds", "submission to finish, by final state", ["state"],
            buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.bytes_generated = Counter("initium_bytes_generated", "bytes of finished artifacts", registry=self.registry)
        self._counted: set[tuple[str, str]] | None = None

    def observe_submission(self, created: bool, state: str) -> None:
        """One POST /v1/initializations: a new job, or an existing one (succeeded: a cache hit)."""
        self.submissions.labels("created" if created else f"existing_{state}").inc()
        if not created and state == "succeeded":
            self.cache_hits.inc()

    def observe_store(self, store: JobStore) -> None:
        """Queue depth now, and each job that finished since the last scrape, once. Jobs already
        finished when the API started are not counted (they belong to an earlier process's series)."""
        records = list(store.records.records())
        self.queue_depth.set(sum(r.state in ("queued", "running") for r in records))
        # keyed by when each finished (a report computed afterwards changes updated_at, not this)
        finished = {(r.id, r.finished_at or r.updated_at): r for r in records if r.state in ("succeeded", "failed")}
        if self._counted is None:
            self._counted = set(finished)
            return
        for key in finished.keys() - self._counted:
            record = finished[key]
            took = datetime.fromisoformat(key[1]) - datetime.fromisoformat(record.created_at)
            self.job_duration.labels(record.state).observe(max(0.0, took.total_seconds()))
            if record.state == "succeeded":
                self.bytes_generated.inc(sum(f.size for f in record.files))
        self._counted |= finished.keys()
