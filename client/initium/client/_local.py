"""Local mode: Client's methods done in this process, on its own GPU or CPU, with no server.

It runs the service's own plan, materialize, summarize and write code (initium-service must be
installed) against a job store in a local directory, so a request gives the bytes the service
gives, and a second identical request is answered from that store. Errors are the client's typed
exceptions, as the service's HTTP answers would raise them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from initium.client._base import PolicyLike, RequestLike, build_request, wait_outcome
from initium.client._errors import IntegrityError, status_error
from initium.client._result import InitResult
from initium.schemas.catalog import SchemeInfo
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import Report

if TYPE_CHECKING:
    import torch


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "initium" / "local"


class LocalClient:
    """Client.local(): the same calls, computed here. `data_dir` keeps the jobs (default
    ~/.cache/initium/local); `device` is auto (cuda when visible), cpu or cuda[:N]."""

    def __init__(self, data_dir: str | Path | None = None, device: str = "auto") -> None:
        try:
            from initium.service.config import Settings
            from initium.service.jobs.presets import PresetStore
            from initium.service.jobs.store import JobStore
            from initium.service.materialize.tensor import pick_device
        except ImportError as exc:
            raise ImportError(f"local mode runs the service's code: pip install initium-service ({exc})") from None
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self._store = JobStore(self.data_dir)
        self._presets = PresetStore(self.data_dir)
        self._settings = Settings(data_dir=self.data_dir)
        self.device = pick_device(device)

    def plan(self, request: RequestLike | None = None, **parts: Any) -> Plan:
        from initium.service.plan.planner import make_plan

        with _as_client_errors():
            return make_plan(build_request(request, **parts), self._limits(), self._presets.all())

    def submit(self, request: RequestLike | None = None, **parts: Any) -> JobStatus:
        """Create the job and run it to the end here (a repeated request is answered from the store)."""
        from initium.service.jobs import submit as jobs
        from initium.service.pipeline.loop import run_one

        with _as_client_errors():
            submission = jobs.submit(self._store, build_request(request, **parts), self._limits(), self._presets)
            job_id = submission.status.id
            if submission.status.state != "succeeded":
                run_one(self._store, job_id, self.device)
                self._store.dequeue(job_id)
            return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        from initium.service.jobs import submit as jobs

        with _as_client_errors():
            return jobs.to_status(self._store.load(job_id))

    def wait(self, job_id: str, timeout: float | None = None, poll_interval: float = 0.2) -> JobStatus:
        """Like Client.wait. submit() has run the job already, unless another process sharing this
        data directory is running it; then this polls until that one finishes."""
        started = time.monotonic()
        while (done := wait_outcome(self.status(job_id), timeout, started)) is None:
            time.sleep(poll_interval)
        return done

    def report(self, job_id: str) -> Report:
        from initium.service.jobs import submit as jobs

        with _as_client_errors():
            return jobs.load_report(self._store, job_id)

    def presets(self) -> list[Preset]:
        return sorted(self._presets.all().values(), key=lambda p: (p.name, p.version))

    def preset(self, ref: str) -> Preset:
        with _as_client_errors():
            return self._presets.get(ref)

    def schemes(self) -> list[SchemeInfo]:
        from initium.schemas.catalog import scheme_catalog

        return scheme_catalog().schemes

    def download(self, job_id: str, path: str | Path, sha256: str, size: int | None = None) -> Path:
        """Copy the job's weights to `path`, verified against `sha256` on the way."""
        from initium.service.jobs import submit as jobs
        from initium.service.jobs.submit import VerifiedFiles

        with _as_client_errors():
            source, recorded = jobs.weights_path_and_sha(self._store, job_id, VerifiedFiles())
        if recorded != sha256:
            raise IntegrityError(f"job {job_id}'s weights have sha256 {recorded}, expected {sha256}")
        shutil.copyfile(source, path)
        return Path(path)

    def initialize(
        self, request: RequestLike | None = None, *, path: str | Path | None = None, timeout: float | None = None,
        **parts: Any,
    ) -> InitResult:  # fmt: skip
        """Client.initialize, here: without `path` the result points into the local store (no copy)."""
        status = self.wait(self.submit(request, **parts).id, timeout)
        folder = self._store.job_dir(status.id)
        main = folder / status.files[-1].name
        result = InitResult(status, main, self.report(status.id))
        if path is not None:
            return InitResult(status, result.save(path), result.report)
        return result

    def initialize_module(
        self, module: torch.nn.Module, *, policy: PolicyLike, seed: int = 0, dtype: str | None = None,
        roles: Mapping[str, Sequence[str]] | None = None, timeout: float | None = None,
    ) -> InitResult:  # fmt: skip
        from initium.client._torch import initialize_module

        return initialize_module(
            self.initialize, module, policy=policy, seed=seed, dtype=dtype, roles=roles, timeout=timeout
        )

    def _limits(self) -> Any:
        return self._settings.limits()

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
    """The service's typed errors become the client's, exactly as over HTTP (initium.service.api.http)."""
    from initium.service import errors
    from initium.service.api.http import STATUS

    try:
        yield
    except errors.InitiumError as exc:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
        body = {"error": {"type": exc.type, "message": str(exc), "loc": list(getattr(exc, "loc", []) or [])}}
        raise status_error(status, body) from exc
