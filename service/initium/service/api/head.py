"""HEAD on every GET route (RFC 9110 section 9.3.2: the same status and headers as GET, no body).

FastAPI registers a GET route for GET alone, so HEAD on a job's status, a report, the catalog or the
health routes answered 405 (round two of issue 16); health checkers and caches send HEAD. A HEAD
that no route takes as HEAD runs the GET route, on a copy of the scope that says GET: the server
still sees HEAD and sends no body (uvicorn's h11 protocol drops it). The downloads keep HEAD routes
of their own, which answer without reading the artifact (api.routes.initializations).
"""

from __future__ import annotations

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


class HeadAsGet:
    """Pure ASGI: HEAD to a path whose only route is GET is answered by that GET route."""

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app, self.router = app, router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD" and not self._takes(scope):
            as_get = {**scope, "method": "GET"}
            if self._takes(as_get):
                try:
                    await self.app(as_get, receive, send)
                finally:
                    if "route" in as_get:  # for the request log's route label (api.request_log)
                        scope["route"] = as_get["route"]
                return
        await self.app(scope, receive, send)

    def _takes(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self.router.routes)
