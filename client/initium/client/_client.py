"""The synchronous client: submit, wait, download with resume and sha256 verification, and load."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from initium.client import _calls as api
from initium.client._base import ClientBase
from initium.client._download import Received, artifact_fetches, download, live_download, live_part, settled
from initium.client._errors import ReportPendingError
from initium.client._fetch import Fetch, file_url, weights_url
from initium.client._request import PolicyLike, RequestLike, build_request
from initium.client._result import InitResult
from initium.client._wait import ProgressBar, progress_bar, report_wait, wait_outcome
from initium.schemas.catalog import SchemeInfo
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import RecordedReport, Report

if TYPE_CHECKING:
    import torch

    from initium.client._local import LocalClient

T = TypeVar("T")
__all__ = ["Client", "build_request"]


class Client(ClientBase[httpx.Client]):
    """Talks to one initium service; see ClientBase for the arguments."""

    http_class = httpx.Client

    @staticmethod
    def local(data_dir: str | Path | None = None, device: str = "auto") -> LocalClient:
        """A client with the same methods that does the work in this process (no server): the same
        plan, materialize and write code as the service, so the same bytes. Needs initium-service."""
        from initium.client._local import LocalClient

        return LocalClient(data_dir, device)

    # -- calls -------------------------------------------------------------------------------

    def plan(self, request: RequestLike | None = None, **parts: Any) -> Plan:
        """The dry run: every tensor the request would produce, nothing generated."""
        return self._call(api.plan_call(request, **parts))

    def submit(self, request: RequestLike | None = None, **parts: Any) -> JobStatus:
        """Enqueue (or find) the job for this request and return its status at once."""
        return self._call(api.submit_call(request, **parts))

    def status(self, job_id: str) -> JobStatus:
        return self._call(api.status_call(job_id))

    def wait(self, job_id: str, timeout: float | None = None, *, since: float | None = None) -> JobStatus:
        """Poll until the job succeeds; raises JobFailedError, or JobTimeoutError once `timeout`
        seconds passed since `since` (time.monotonic(); default now)."""
        started = time.monotonic() if since is None else since
        with progress_bar(self.progress) as bar:
            while (done := wait_outcome(self._tracked(job_id, bar), timeout, started)) is None:
                time.sleep(self.settings.poll_interval)
        return done

    def report(self, job_id: str, timeout: float | None = None) -> Report:
        """The job's report. The service computes it after the weights (issue 17): while it is
        pending this waits, up to `timeout` seconds (None: as long as it takes; then the
        ReportPendingError is raised). ReportFailedError when it could not be computed."""
        return self._pending_waited(api.report_call(job_id), timeout)

    def report_html(self, job_id: str, path: str | Path | None = None, timeout: float | None = None) -> str:
        """The report as one self-contained HTML page (waiting as `report` does); also written to `path` when given."""
        html = self._pending_waited(api.report_html_call(job_id), timeout)
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def record_report(self, report: Report) -> RecordedReport:
        """Keep a report (one made in local mode, say) on the service for the record."""
        return self._call(api.record_report_call(report))

    def presets(self) -> list[Preset]:
        """Every preset the server knows, built-in and published."""
        return self._call(api.presets_call())

    def preset(self, ref: str) -> Preset:
        """One preset: 'name' (newest version) or 'name@version'."""
        return self._call(api.preset_call(ref))

    def publish_preset(self, preset: Preset | Mapping[str, Any]) -> Preset:
        """Publish a platform policy; identical republishing is a no-op, other rules under a published
        version raise ConflictError (versions are immutable)."""
        return self._call(api.publish_preset_call(preset))

    def schemes(self) -> list[SchemeInfo]:
        """Every initialization scheme the service knows, with its parameters and paper."""
        return self._call(api.schemes_call())

    def download(self, job_id: str, path: str | Path, sha256: str, size: int | None = None) -> Path:
        """Stream the (single-file) weights to `path`, resuming a dropped connection, and verify them."""
        return self._download(Fetch(weights_url(job_id), Path(path), sha256, size or 0))

    def download_file(self, job_id: str, name: str, path: str | Path, sha256: str, size: int | None = None) -> Path:
        """Stream one of the job's files (a shard, or the shard index) and verify its sha256."""
        return self._download(Fetch(file_url(job_id, name), Path(path), sha256, size or 0))

    def initialize(
        self,
        request: RequestLike | None = None,
        *,
        path: str | Path | None = None,
        timeout: float | None = None,
        **parts: Any,
    ) -> InitResult:
        """Submit, wait, download and verify: the initialized weights on local disk.

        Pass a whole request, or spec=, policy=, seed=, dtype=, slices= (dicts or schema models; a
        policy may also be a preset's name, e.g. policy="gpt2").
        Without `path` the result lives in the client's download cache and a repeated request is not
        downloaded again (see `cache_dir`); `result.save(path)` copies it.
        """
        status, result_path = self._weights(self.submit(request, **parts), path, timeout)
        return InitResult(status, result_path, functools.partial(self.report, status.id))

    def initialize_module(
        self,
        module: torch.nn.Module,
        *,
        policy: PolicyLike,
        seed: int = 0,
        dtype: str | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> InitResult:
        """Initialize any nn.Module (even on the meta device) in one call and load the result strictly.

        The module is described by `spec_from_module` (tied weights once, `roles` tagging tensors by
        name glob), initialized by the service under `policy` (a policy, or a preset's name such as
        "gpt2"), and loaded back in place (a meta module with assign=True: no second copy of its
        weights). It comes back with the ties it had, no meta tensor, and its other buffers as its
        framework computes them; ValueError names any buffer that cannot be computed.
        """
        from initium.client._torch import initialize_module

        return initialize_module(
            self.initialize, module, policy=policy, seed=seed, dtype=dtype, roles=roles, timeout=timeout
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, call: api.Call[T]) -> T:
        """Send with retries (see [Note: retries] in initium.client._retry); one idempotency key for every
        attempt."""
        headers = {"Idempotency-Key": api.new_idempotency_key()}
        for attempt in itertools.count(1):
            try:
                try:
                    response = self._http.request(call.method, call.path, **call.send_args(headers))
                except httpx.TransportError as exc:
                    raise api.connection_error(self.base_url, exc) from exc
                return api.parse(call, response)
            except Exception as error:
                time.sleep(self.settings.retry.wait_after(attempt, error))
        raise AssertionError("unreachable")

    def _pending_waited(self, call: api.Call[T], timeout: float | None) -> T:
        """`call`, again after each Retry-After while the report it asks for is pending."""
        started = time.monotonic()
        while True:
            try:
                return self._call(call)
            except ReportPendingError as pending:
                time.sleep(report_wait(pending, self.settings.poll_interval, timeout, started))

    def _tracked(self, job_id: str, bar: ProgressBar) -> JobStatus:
        status = self.status(job_id)
        bar.show(status)
        return status

    def _weights(self, status: JobStatus, path: str | Path | None, timeout: float | None) -> tuple[JobStatus, Path]:
        """The submitted job's files on local disk, verified and fsync'd: (its final status, the result's
        path). A job still running streams its single file while it is written (see [Note: live
        downloads] in initium.client._download), then is waited for; its sha256 decides."""
        received = None
        try:
            if status.state != "succeeded":
                started = time.monotonic()
                deadline = None if timeout is None else started + timeout
                part = live_part(status.id, path, self.cache)
                received = live_download(self._http, status.id, part, self.progress, deadline)
                job_id = status.id
                status = settled(lambda: self.status(job_id), received) or self.wait(job_id, timeout, since=started)
            result_path, fetches = artifact_fetches(status, path, self.cache)
            for fetch in fetches:
                if self.cache is None or not self.cache.reuse(fetch):
                    self._download(fetch, received if len(fetches) == 1 else None)
                    if self.cache is not None:
                        self.cache.remember(fetch)
            return status, result_path
        finally:
            if received is not None:
                received.discard()  # not taken over (a cached copy served, the job failed): it goes

    def _download(self, fetch: Fetch, received: Received | None = None) -> Path:
        return download(self._http, fetch, self.settings.retry, self.progress, received)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
