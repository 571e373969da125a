"""The FastAPI application: routes, error handlers, metrics and the embedded worker's lifecycle.

This process validates and plans; it never imports torch (a test holds this). Workers compute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.routing import APIRoute

import initium.service
from initium.service.api.capacity import PlanSlots
from initium.service.api.connections import BoundedWrites, HeaderLimit
from initium.service.api.head import HeadAsGet
from initium.service.api.http import document_json_bodies, install_error_handlers
from initium.service.api.live import QUIET_SHORT_ENDS, LiveStreams
from initium.service.api.metrics import Metrics
from initium.service.api.request_log import RequestLog
from initium.service.api.routes import catalog, health, initializations, plans, reports
from initium.service.api.security import ApiKeyGate, BodyLimit, JsonBodies
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
    # Jobs are queued by planned bytes in a lane (see [Note: lanes] in initium.service.jobs.store).
    app.state.store = JobStore(
        settings.data_dir, records, artifacts, settings.large_job_bytes, settings.large_job_tensors
    )
    app.state.store.republish_after_s = settings.republish_after_s
    app.state.presets = PresetStore(settings.data_dir, settings.max_preset_rules, settings.max_presets_bytes)
    app.state.verified = VerifiedFiles()
    app.state.plan_slots = PlanSlots(settings.max_concurrent_plans)  # see [Note: planning slots]
    app.state.live_streams = LiveStreams(settings.max_live_streams)  # see api.live
    logging.getLogger("uvicorn.error").addFilter(QUIET_SHORT_ENDS)
    app.state.metrics = Metrics()
    try:  # jobs finished before this process are not its to count
        app.state.metrics.observe_store(app.state.store)
    except StoreUnavailableError as exc:  # Redis down at start: the API starts, not ready, and counts later
        log.warning("job records unreadable at start: %s", exc.message)
    app.state.dispatcher = _dispatcher(settings, app.state.store)
    embedded = settings.embedded_worker and settings.broker_url is None
    app.state.supervisor = WorkerSupervisor(settings) if embedded else None
    for module in (initializations, plans, catalog, reports, health):
        app.include_router(module.router)
    install_error_handlers(app)
    document_json_bodies(app)
    # The gates read headers only, outermost first: the key, then the body's form, then its size, all
    # before FastAPI reads the body; the request counter wraps them, so refusals are counted and carry
    # X-Request-ID. With keys configured every path needs one but health, readiness and metrics (for
    # the orchestrator and the scraper) and, when INITIUM_PUBLIC_DOCS is set, the docs.
    app.add_middleware(HeadAsGet, router=app.router)  # innermost: HEAD on every GET route
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(JsonBodies)
    docs = [p for p in (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p]
    health_paths = [route.path for route in health.router.routes if isinstance(route, APIRoute)]
    open_paths = health_paths + (docs if settings.public_docs else [])
    app.add_middleware(ApiKeyGate, hashes=settings.key_hashes(), open_paths=open_paths)
    # The head's size first: what uvicorn's own head limit lets through (see HeaderLimit).
    app.add_middleware(HeaderLimit, limit=settings.max_header_bytes)
    app.add_middleware(RequestLog, metrics=app.state.metrics)
    # Outermost: the server gets bounded writes, so a stalled download holds little ([Note: stalled downloads]).
    app.add_middleware(BoundedWrites)
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
            log.info("evicted %d finished jobs and recorded reports: %s", len(removed),
                     ", ".join(r[:20] for r in removed))  # fmt: skip
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
