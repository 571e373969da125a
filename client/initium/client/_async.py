"""The asynchronous client: Client's calls on httpx.AsyncClient, for asyncio pipelines.

The calls themselves (what to send, how to read it), the retry policy, the settings and the
download bookkeeping are the ones Client uses (initium.client._calls, _retry, _settings,
_download); only sending and sleeping are awaited here.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from initium.client import _calls as api
from initium.client._base import ClientBase
from initium.client._download import adownload, artifact_fetches
from initium.client._request import RequestLike
from initium.client._result import InitResult
from initium.client._wait import progress_bar, wait_outcome
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

    async def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        started = time.monotonic()
        with progress_bar(self.progress) as bar:
            while True:
                status = await self.status(job_id)
                bar.show(status)
                if (done := wait_outcome(status, timeout, started)) is not None:
                    return done
                await asyncio.sleep(self.settings.poll_interval)

    async def report(self, job_id: str) -> Report:
        return await self._call(api.report_call(job_id))

    async def report_html(self, job_id: str) -> str:
        return await self._call(api.report_html_call(job_id))

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
        return InitResult(status, result_path, await self.report(status.id))

    async def _weights(
        self, status: JobStatus, path: str | Path | None, timeout: float | None
    ) -> tuple[JobStatus, Path]:
        """Client._weights, awaited."""
        if status.state != "succeeded":
            status = await self.wait(status.id, timeout)
        result_path, fetches = artifact_fetches(status, path, self.cache)
        for fetch in fetches:
            if self.cache is None or not self.cache.reuse(fetch):
                await adownload(self._http, fetch, self.settings.retry, self.progress)
                if self.cache is not None:
                    self.cache.remember(fetch)
        return status, result_path

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
