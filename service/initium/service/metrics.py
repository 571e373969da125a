"""Prometheus metrics of the API process (prometheus_client, one registry per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "initium_http_requests", "HTTP requests by route and status", ["method", "route", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.submissions = Counter(
            "initium_submissions", "POST /v1/initializations by outcome", ["outcome"], registry=self.registry
        )
        self.queue_depth = Gauge("initium_queue_depth", "jobs queued or running", registry=self.registry)
        self.worker_up = Gauge("initium_worker_up", "1 when the worker answers", registry=self.registry)
