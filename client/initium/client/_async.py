"""The asynchronous client: Client's calls on httpx.AsyncClient, for asyncio pipelines.

The calls themselves (what to send, how to read it), the retry policy, the settings and the
download bookkeeping are the ones Client uses (initium.client._calls, _retry, _settings,
_download); only sending and sleeping are awaited here.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from initium.client import _calls as api
from initium.client._base import ClientBase
from initium.client._download import adownload, alive_download, artifact_fetches, asettled, live_part
from initium.client._errors import ReportPendingError
from initium.client._request import RequestLike
from initium.client._result import InitResult
from initium.client._wait import progress_bar, report_wait, wait_outcome
from initium.schemas.catalog import SchemeInfo
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import RecordedReport, Report

T = TypeVar("T")


class AsyncClient(ClientBase[httpx.AsyncClient]):
    """Client with `await`: same arguments (see ClientBase), same methods (initialize_module
    excepted: loading into a module is synchronous work; run Client.initialize_module in a thread),
    same errors."""

    http_class = httpx.AsyncClient

    async def plan(self, request: RequestLike | None = None, **parts: Any) -> Plan:
        return await self._call(api.plan_call(request, **parts))

    async def submit(self, request: RequestLike | None = None, **parts: Any) -> JobStatus:
        return await self._call(api.submit_call(request, **parts))

    async def status(self, job_id: str) -> JobStatus:
        return await self._call(api.status_call(job_id))

    async def wait(self, job_id: str, timeout: float | None = None, *, since: float | None = None) -> JobStatus:
        """Client.wait, awaited."""
        started = time.monotonic() if since is None else since
        with progress_bar(self.progress) as bar:
            while True:
                status = await self.status(job_id)
                bar.show(status)
                if (done := wait_outcome(status, timeout, started)) is not None:
                    return done
                await asyncio.sleep(self.settings.poll_interval)

    async def report(self, job_id: str, timeout: float | None = None) -> Report:
        """Client.report, awaited: waits while the report is computed after the weights."""
        return await self._pending_waited(api.report_call(job_id), timeout)

    async def report_html(self, job_id: str, timeout: float | None = None) -> str:
        return await self._pending_waited(api.report_html_call(job_id), timeout)

    async def record_report(self, report: Report) -> RecordedReport:
        return await self._call(api.record_report_call(report))

    async def presets(self) -> list[Preset]:
        return await self._call(api.presets_call())

    async def preset(self, ref: str) -> Preset:
        return await self._call(api.preset_call(ref))

    async def publish_preset(self, preset: Preset | Mapping[str, Any]) -> Preset:
        return await self._call(api.publish_preset_call(preset))

    async def schemes(self) -> list[SchemeInfo]:
        return await self._call(api.schemes_call())

    async def initialize(
        self, request: RequestLike | None = None, *, path: str | Path | None = None, timeout: float | None = None,
        **parts: Any,
    ) -> InitResult:  # fmt: skip
        """Submit, wait, download (resumable) and verify; see Client.initialize."""
        status, result_path = await self._weights(await self.submit(request, **parts), path, timeout)
        return InitResult(status, result_path, functools.partial(self._report_blocking, status.id))

    def _report_blocking(self, job_id: str) -> Report:
        """What `result.report` runs when first read: InitResult's attributes are not awaitable, so
        a short-lived synchronous client with these settings fetches it (waiting while it is
        pending). In a running event loop, prefer `await client.report(result.id)`."""
        from initium.client._client import Client

        s = self.settings
        with Client(s.base_url, api_key=s.api_key, timeout=s.timeout, retry=s.retry, poll_interval=s.poll_interval,
                    cache_dir=False) as client:  # fmt: skip
            return client.report(job_id)

    async def _weights(
        self, status: JobStatus, path: str | Path | None, timeout: float | None
    ) -> tuple[JobStatus, Path]:
        """Client._weights, awaited."""
        received = None
        try:
            if status.state != "succeeded":
                started = time.monotonic()
                deadline = None if timeout is None else started + timeout
                part = live_part(status.id, path, self.cache)
                received = await alive_download(self._http, status.id, part, self.progress, deadline)
                job_id = status.id
                settled_status = await asettled(lambda: self.status(job_id), received)
                status = settled_status or await self.wait(job_id, timeout, since=started)
            result_path, fetches = artifact_fetches(status, path, self.cache)
            for fetch in fetches:
                if self.cache is None or not self.cache.reuse(fetch):
                    carried = received if len(fetches) == 1 else None
                    await adownload(self._http, fetch, self.settings.retry, self.progress, carried)
                    if self.cache is not None:
                        self.cache.remember(fetch)
            return status, result_path
        finally:
            if received is not None:
                received.discard()  # not taken over (a cached copy served, the job failed): it goes

    async def _pending_waited(self, call: api.Call[T], timeout: float | None) -> T:
        started = time.monotonic()
        while True:
            try:
                return await self._call(call)
            except ReportPendingError as pending:
                await asyncio.sleep(report_wait(pending, self.settings.poll_interval, timeout, started))

    async def _call(self, call: api.Call[T]) -> T:
        """Send with retries (see [Note: retries] in initium.client._retry); one idempotency key."""
        headers = {"Idempotency-Key": api.new_idempotency_key()}
        for attempt in itertools.count(1):
            try:
                try:
                    response = await self._http.request(call.method, call.path, **call.send_args(headers))
                except httpx.TransportError as exc:
                    raise api.connection_error(self.base_url, exc) from exc
                return api.parse(call, response)
            except Exception as error:
                await asyncio.sleep(self.settings.retry.wait_after(attempt, error))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
