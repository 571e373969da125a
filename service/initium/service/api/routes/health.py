"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
import shutil

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from initium.service.api.deps import DispatcherDep, MetricsDep, StoreDep, SupervisorDep
from initium.service.errors import InsufficientStorageError, StoreUnavailableError
from initium.service.jobs.queue import Dispatcher
from initium.service.jobs.store import JobStore
from initium.service.jobs.supervisor import WorkerSupervisor

log = logging.getLogger("initium.api")
router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process answers. Async: answered on the event loop itself, so it never queues behind
    the thread pool's planning and downloads (issue 16: a large plan stalled it for 6 s)."""
    return {"status": "ok"}


_NOT_READY = (
    "not ready: the job store is missing or full, the artifact store is down or full, or the worker or the "
    "broker is down (the body says which)"
)


@router.get("/readyz", responses={503: {"description": _NOT_READY}})
def readyz(request: Request, supervisor: SupervisorDep, store: StoreDep, dispatcher: DispatcherDep) -> JSONResponse:
    """Ready when the store is writable with at least INITIUM_MIN_FREE_BYTES free on its volume
    (`store`: ok, missing or full; `store_free_bytes`), the artifact store answers (S3: a HEAD of the
    bucket, within ~2 s; one that refused a write for space must take a probe write) and a worker
    can take jobs: each lane's embedded worker beats (`lanes`: worker, device, pid, heartbeat age),
    or (Celery) the job records' Redis answers (`records`: ok, volatile when Redis does not persist
    them, or down), the broker answers and at least one worker replies to a ping. Never a 500: a
    store or broker that fails is reported as not ready with its cause. A full store turns
    ready again by itself once space is freed."""
    body = _readiness(supervisor, store, dispatcher, min_free_bytes=request.app.state.settings.min_free_bytes)
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


def _readiness(
    supervisor: WorkerSupervisor | None,
    store: JobStore,
    dispatcher: Dispatcher,
    count_workers: bool = True,
    *,
    min_free_bytes: int,
) -> dict[str, object]:
    volume, free = _volume(store, min_free_bytes)
    artifacts = _artifacts(store)
    body: dict[str, object] = {"store": volume, "store_free_bytes": free, "artifacts": artifacts}
    engine = dispatcher.readiness(count_workers)
    if engine:  # Celery
        body |= engine
        # records (Redis): ok or volatile (not persisted: ready, but the README says to fix it) or down
        records = str(engine.get("records", "ok")) in ("ok", "volatile")
        workers = records and engine["broker"] == "ok" and int(str(engine["workers"])) > 0
    elif supervisor is not None:  # embedded: one worker per lane (see [Note: lanes] in jobs.store)
        lanes = supervisor.lanes()
        workers = all(lane["worker"] == "ok" for lane in lanes.values())
        ages = [lane["heartbeat_age_s"] for lane in lanes.values()]
        unusable = any(lane["worker"] == "device_unusable" for lane in lanes.values())
        body |= {
            "worker": "ok" if workers else ("device_unusable" if unusable else "down"),
            "worker_heartbeat_age_s": None if None in ages else max(float(str(a)) for a in ages),
            "lanes": lanes,
        }
    else:
        workers, body["worker"] = True, "external"
    return {"status": "ready" if volume == "ok" and artifacts == "ok" and workers else "not_ready", **body}


def _volume(store: JobStore, min_free_bytes: int) -> tuple[str, int | None]:
    """The data volume's readiness (records, queue and presets live there, and local artifacts):
    missing, full (fewer than min_free_bytes free: see [Note: free space for readiness] in config)
    or ok; with its free bytes (statvfs' f_bavail: what a writer that is not root may use), None
    when missing."""
    if not (store.jobs.is_dir() and store.queue.is_dir()):
        return "missing", None
    free = shutil.disk_usage(store.root).free
    if free < min_free_bytes:
        fix = "free space on it, or set INITIUM_STORE_MAX_BYTES for eviction"
        log.warning("not ready: the data volume (INITIUM_DATA_DIR) has %d bytes free, under INITIUM_MIN_FREE_BYTES "
                    "(%d): %s", free, min_free_bytes, fix)  # fmt: skip
        return "full", free
    return "ok", free


def _artifacts(store: JobStore) -> str:
    """The artifact store's readiness: ok, down (<cause>), e.g. down (EndpointConnectionError), or
    full (<cause>), e.g. full (XMinioStorageFull); the log has the message with the fix."""
    try:
        store.artifacts.check()
    except StoreUnavailableError as exc:
        log.warning("not ready: %s", exc.message)
        return f"down ({exc.reason})"
    except InsufficientStorageError as exc:
        log.warning("not ready: %s", exc.message)
        return f"full ({exc.reason})"
    return "ok"


@router.get("/metrics", response_class=Response)
def metrics(
    request: Request, metrics: MetricsDep, store: StoreDep, supervisor: SupervisorDep, dispatcher: DispatcherDep
) -> Response:
    """Prometheus text format; while the job records cannot be read (Redis down) the job series keep
    their last values and initium_worker_up says 0, rather than the scrape failing."""
    try:
        metrics.observe_store(store)
    except StoreUnavailableError as exc:
        log.warning("metrics: job records unreadable: %s", exc.message)
    min_free = request.app.state.settings.min_free_bytes
    ready = _readiness(supervisor, store, dispatcher, count_workers=False, min_free_bytes=min_free)["status"] == "ready"
    metrics.worker_up.set(1 if ready else 0)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
