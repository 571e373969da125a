"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from initium.service.deps import MetricsDep, StoreDep, SupervisorDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(supervisor: SupervisorDep, store: StoreDep) -> JSONResponse:
    """Ready when the store is writable and the worker's heartbeat is fresh."""
    writable = store.jobs.is_dir() and store.queue.is_dir()
    worker = supervisor is None or supervisor.ready()
    age = None if supervisor is None else supervisor.heartbeat_age()
    body = {
        "status": "ready" if writable and worker else "not_ready",
        "store": "ok" if writable else "missing",
        "worker": "external" if supervisor is None else ("ok" if worker else "down"),
        "worker_heartbeat_age_s": None if age is None else round(age, 3),
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


@router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep, store: StoreDep, supervisor: SupervisorDep) -> Response:
    """Prometheus text format."""
    metrics.queue_depth.set(len(store.queued_ids()))
    metrics.worker_up.set(1 if supervisor is None or supervisor.ready() else 0)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
