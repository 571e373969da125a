"""Every request's id, log line and metric, as pure ASGI.

A Starlette BaseHTTPMiddleware (`app.middleware("http")`) relays the response through a memory
stream of its own, so each stalled download held a second body chunk in flight: 800 stalled
downloads took 1.9 GB with it, 1.2 GB without (issue 16; see [Note: stalled downloads] in
initium.service.api.connections). Passing the messages straight through holds nothing.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initium.service import logs
from initium.service.api.metrics import Metrics

log = logging.getLogger("initium.api")


class RequestLog:
    """The caller's X-Request-ID (or a new one) set for the logs while the request runs and sent back;
    one log line with the status and the milliseconds to the response's last byte; one count in
    `metrics.requests` by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        token = logs.request_id.set(rid)
        started, status = time.perf_counter(), 500  # an exception escaping the app is answered 500 outside

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = 1000 * (time.perf_counter() - started)
            log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, ms)
            self.metrics.requests.labels(scope["method"], _route_template(scope), str(status)).inc()
            logs.request_id.reset(token)


def _route_template(scope: Scope) -> str:
    # Label by template, not by path: one series per route, not one per job id.
    return str(getattr(scope.get("route"), "path", "unmatched"))
