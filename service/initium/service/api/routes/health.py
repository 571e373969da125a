"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from initium.service.api.deps import DispatcherDep, MetricsDep, StoreDep, SupervisorDep
from initium.service.errors import StoreUnavailableError
from initium.service.jobs.queue import Dispatcher
from initium.service.jobs.store import JobStore
from initium.service.jobs.supervisor import WorkerSupervisor

log = logging.getLogger("initium.api")
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The API process answers."""
    return {"status": "ok"}


_NOT_READY = "not ready: the job store, the artifact store, the worker or the broker is down (the body says which)"


@router.get("/readyz", responses={503: {"description": _NOT_READY}})
def readyz(supervisor: SupervisorDep, store: StoreDep, dispatcher: DispatcherDep) -> JSONResponse:
    """Ready when the store is writable, the artifact store answers (S3: a HEAD of the bucket, within
    ~2 s) and a worker can take jobs: the embedded worker's heartbeat is fresh, or (Celery) the
    broker answers and at least one worker replies to a ping."""
    body = _readiness(supervisor, store, dispatcher)
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


def _readiness(
    supervisor: WorkerSupervisor | None, store: JobStore, dispatcher: Dispatcher, count_workers: bool = True
) -> dict[str, object]:
    writable = store.jobs.is_dir() and store.queue.is_dir()
    artifacts = _artifacts(store)
    body: dict[str, object] = {"store": "ok" if writable else "missing", "artifacts": artifacts}
    engine = dispatcher.readiness(count_workers)
    if engine:  # Celery
        body |= engine
        workers = engine["broker"] == "ok" and int(str(engine["workers"])) > 0
    elif supervisor is not None:
        workers = supervisor.ready()
        age = supervisor.heartbeat_age()
        body |= {
            "worker": "ok" if workers else "down",
            "worker_heartbeat_age_s": None if age is None else round(age, 3),
        }
    else:
        workers, body["worker"] = True, "external"
    return {"status": "ready" if writable and artifacts == "ok" and workers else "not_ready", **body}


def _artifacts(store: JobStore) -> str:
    """The artifact store's readiness: ok, or down (<cause>), e.g. down (EndpointConnectionError);
    the log has the message with the fix."""
    try:
        store.artifacts.check()
    except StoreUnavailableError as exc:
        log.warning("not ready: %s", exc.message)
        return f"down ({exc.reason})"
    return "ok"


@router.get("/metrics", response_class=Response)
def metrics(metrics: MetricsDep, store: StoreDep, supervisor: SupervisorDep, dispatcher: DispatcherDep) -> Response:
    """Prometheus text format."""
    metrics.observe_store(store)
    ready = _readiness(supervisor, store, dispatcher, count_workers=False)["status"] == "ready"
    metrics.worker_up.set(1 if ready else 0)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
