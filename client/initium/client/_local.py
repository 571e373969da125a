"""Local mode: Client's methods done in this process, on its own GPU or CPU, with no server.

It calls the service's one local entry point (initium.service.pipeline.local.LocalService, so
initium-service must be installed): the same plan, materialize, summarize and write code against a
job store in a local directory, so a request gives the bytes the service gives, and a second
identical request is answered from that store. Errors are the client's typed exceptions, as the
service's HTTP answers would raise them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from initium.client._errors import IntegrityError, status_error
from initium.client._request import PolicyLike, RequestLike, build_request
from initium.client._result import InitResult
from initium.client._wait import wait_outcome
from initium.schemas.catalog import SchemeInfo
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import Report

if TYPE_CHECKING:
    import torch

    from initium.service.pipeline.local import LocalService


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "initium" / "local"


class LocalClient:
    """Client.local(): the same calls, computed here. `data_dir` keeps the jobs (default
    ~/.cache/initium/local); `device` is auto (cuda when visible), cpu or cuda[:N]."""

    def __init__(self, data_dir: str | Path | None = None, device: str = "auto") -> None:
        try:
            from initium.service.pipeline.local import LocalService
        except ImportError as exc:
            raise ImportError(f"local mode runs the service's code: pip install initium-service ({exc})") from None
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self._service: LocalService = LocalService(self.data_dir, device)
        self.device = self._service.device

    def plan(self, request: RequestLike | None = None, **parts: Any) -> Plan:
        with _as_client_errors():
            return self._service.plan(build_request(request, **parts))

    def submit(self, request: RequestLike | None = None, **parts: Any) -> JobStatus:
        """Create the job and run it to the end here (a repeated request is answered from the store)."""
        with _as_client_errors():
            return self._service.run(build_request(request, **parts))

    def status(self, job_id: str) -> JobStatus:
        with _as_client_errors():
            return self._service.status(job_id)

    def wait(self, job_id: str, timeout: float | None = None, poll_interval: float = 0.2) -> JobStatus:
        """Like Client.wait. submit() has run the job already, unless another process sharing this
        data directory is running it; then this polls until that one finishes."""
        started = time.monotonic()
        while (done := wait_outcome(self.status(job_id), timeout, started)) is None:
            time.sleep(poll_interval)
        return done

    def report(self, job_id: str) -> Report:
        with _as_client_errors():
            return self._service.report(job_id)

    def presets(self) -> list[Preset]:
        return self._service.presets()

    def preset(self, ref: str) -> Preset:
        with _as_client_errors():
            return self._service.preset(ref)

    def publish_preset(self, preset: Preset | Mapping[str, Any]) -> Preset:
        """Publish a platform policy in the local data directory (see Client.publish_preset)."""
        with _as_client_errors():
            return self._service.publish_preset(
                preset if isinstance(preset, Preset) else Preset.model_validate(dict(preset))
            )

    def schemes(self) -> list[SchemeInfo]:
        return self._service.schemes()

    def download(self, job_id: str, path: str | Path, sha256: str, size: int | None = None) -> Path:
        """Copy the job's weights to `path`, verified against `sha256` on the way."""
        with _as_client_errors():
            source, recorded = self._service.file(job_id)
        if recorded != sha256:
            raise IntegrityError(f"job {job_id}'s weights have sha256 {recorded}, expected {sha256}")
        shutil.copyfile(source, path)
        return Path(path)

    def initialize(
        self, request: RequestLike | None = None, *, path: str | Path | None = None, timeout: float | None = None,
        **parts: Any,
    ) -> InitResult:  # fmt: skip
        """Client.initialize, here: without `path` the result points into the local store (no copy),
        each file checked against its sha256 first."""
        status = self.wait(self.submit(request, **parts).id, timeout)
        with _as_client_errors():  # every file checked against its sha256; the last is the main one
            paths = [self._service.file(status.id, f.name)[0] for f in status.files]
        # The report is computed on its first read (local mode makes it only when asked: issue 17).
        report = functools.partial(self.report, status.id)
        return InitResult(status, InitResult(status, paths[-1], report).save(path) if path else paths[-1], report)

    def initialize_module(
        self, module: torch.nn.Module, *, policy: PolicyLike, seed: int = 0, dtype: str | None = None,
        roles: Mapping[str, Sequence[str]] | None = None, timeout: float | None = None,
    ) -> InitResult:  # fmt: skip
        from initium.client._torch import initialize_module

        return initialize_module(
            self.initialize, module, policy=policy, seed=seed, dtype=dtype, roles=roles, timeout=timeout
        )

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextlib.contextmanager
def _as_client_errors() -> Iterator[None]:
    """The service's typed errors become the client's, exactly as over HTTP."""
    from initium.service.pipeline.local import ServiceError, error_answer

    try:
        yield
    except ServiceError as exc:
        raise status_error(*error_answer(exc)) from exc
