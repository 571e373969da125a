"""The FastAPI application: routes, error handlers, metrics and the embedded worker's lifecycle.

This process validates and plans; it never imports torch (a test holds this). Workers compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response

import initium.service
from initium.service import logs
from initium.service.api.http import install_error_handlers
from initium.service.api.metrics import Metrics
from initium.service.api.routes import catalog, health, initializations, plans, reports
from initium.service.api.security import BodyLimit, require_api_key
from initium.service.config import Settings, get_settings
from initium.service.errors import StoreUnavailableError
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.queue import CeleryQueue, Dispatcher, StoreQueue, make_celery
from initium.service.jobs.records import open_records
from initium.service.jobs.store import JobStore
from initium.service.jobs.submit import VerifiedFiles
from initium.service.jobs.supervisor import WorkerSupervisor

log = logging.getLogger("initium.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="initium",
        version=initium.service.__version__,
        summary="Initialized weights as a service: JSON architecture + init policy -> safetensors + report.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    # Under Celery the records live in Redis beside the broker; else files in the data directory.
    records = open_records(settings.broker_url, settings.data_dir)
    # The API's own artifact store: on S3 it fails fast (a 503 the client retries) and starts while
    # S3 is down, which /readyz then reports; see [Note: S3 patience] in initium.service.write.s3.
    artifacts = settings.artifacts(serving=True)
    app.state.store = JobStore(settings.data_dir, records, artifacts)
    app.state.presets = PresetStore(settings.data_dir)
    app.state.verified = VerifiedFiles()
    app.state.metrics = Metrics()
    app.state.metrics.observe_store(app.state.store)  # jobs finished before this process are not its to count
    app.state.dispatcher = _dispatcher(settings, app.state.store)
    embedded = settings.embedded_worker and settings.broker_url is None
    app.state.supervisor = WorkerSupervisor(settings) if embedded else None
    # Every /v1 route needs a key when keys are configured; health, readiness and metrics stay open
    # for the orchestrator and the scraper.
    for module in (initializations, plans, catalog, reports):
        app.include_router(module.router, dependencies=[Depends(require_api_key)])
    app.include_router(health.router)
    install_error_handlers(app)
    app.middleware("http")(_count_requests)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


def _dispatcher(settings: Settings, store: JobStore) -> Dispatcher:
    if settings.broker_url is None:
        return StoreQueue()
    return CeleryQueue(store, make_celery(settings.broker_url, settings.visibility_timeout_s))


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    supervisor: WorkerSupervisor | None = app.state.supervisor
    tasks = [asyncio.create_task(_evict(app.state.store, app.state.settings))]
    if isinstance(app.state.dispatcher, CeleryQueue):
        tasks.append(asyncio.create_task(_drain_outbox(app.state.dispatcher)))
    if supervisor is not None:
        supervisor.start()
        tasks.append(asyncio.create_task(_watch(supervisor)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        if supervisor is not None:
            await asyncio.to_thread(supervisor.stop)


async def _evict(store: JobStore, settings: Settings) -> None:
    """Keep the store within its configured size and age (nothing to do when neither is set)."""
    if settings.store_max_bytes is None and settings.store_max_age_s is None:
        return
    while True:
        try:
            removed = await asyncio.to_thread(
                store.evict, settings.store_max_bytes, settings.store_max_age_s, time.time()
            )
        except StoreUnavailableError as exc:  # S3 is down: the next round tries again (the task must live on)
            log.warning("eviction skipped: %s", exc.message)
            removed = []
        if removed:
            log.info("evicted %d finished jobs: %s", len(removed), ", ".join(r[:12] for r in removed))
        await asyncio.sleep(settings.evict_interval_s)


async def _drain_outbox(queue: CeleryQueue, interval_s: float = 2.0) -> None:
    """Publish jobs persisted but not yet on the broker: at start (a crash between the two) and
    while the broker is unreachable (see [Note: outbox] in initium.service.jobs.queue)."""
    while True:
        try:
            await asyncio.to_thread(queue.publish_outbox)
        except Exception as exc:  # the broker is down: the jobs stay in the outbox for the next round
            log.warning("could not publish to the broker (%s: %s); retrying", type(exc).__name__, exc)
        await asyncio.sleep(interval_s)


async def _watch(supervisor: WorkerSupervisor) -> None:
    while True:
        await asyncio.sleep(1.0)
        supervisor.ensure_running()


async def _count_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    # Every request carries an id (the caller's X-Request-ID, or a new one) into the logs and back.
    rid = request.headers.get("x-request-id") or uuid.uuid4().hex
    token = logs.request_id.set(rid)
    started = time.perf_counter()
    try:
        response = await call_next(request)
        ms = 1000 * (time.perf_counter() - started)
        log.info("%s %s %d %.1f ms", request.method, request.url.path, response.status_code, ms)
    finally:
        logs.request_id.reset(token)
    response.headers["X-Request-ID"] = rid
    metrics: Metrics = request.app.state.metrics
    metrics.requests.labels(request.method, _route_template(request), str(response.status_code)).inc()
    return response


def _route_template(request: Request) -> str:
    # Label by template, not by path: one series per route, not one per job id.
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))
