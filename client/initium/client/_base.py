"""What Client and AsyncClient share: configuration, the retry policy, requests and error mapping.

Both classes are thin shells over this: they differ only in how they send and how they sleep.

[Note: retries] A call is retried on connection errors, 408, 429, 5xx and 409 "not_ready" (a
job's files asked for before it finished), up to `max_attempts`, sleeping a capped, fully
jittered exponential backoff (AWS's "full jitter": uniform in [0, min(cap, base * 2^n)]), or the
server's Retry-After when it gives one (never longer than the cap). Other 409s (a failed job, a
preset version that differs) cannot change by waiting, so they raise at once. Every attempt of one
call carries the same Idempotency-Key, so a server or proxy can tell a retry from a new call;
initium's own POSTs are idempotent anyway (the job id is the request's hash).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import httpx
from pydantic import BaseModel
from tqdm import tqdm

from initium.client._cache import DownloadCache, default_cache_dir
from initium.client._errors import (
    APIConnectionError,
    APIStatusError,
    IntegrityError,
    JobFailedError,
    JobTimeoutError,
    status_error,
)
from initium.schemas.catalog import PresetList, SchemeInfo, SchemeList
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import RecordedReport, Report
from initium.schemas.request import InitRequest

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
RequestLike = InitRequest | Mapping[str, Any]
SpecLike = BaseModel | Mapping[str, Any]
# A policy, or a preset's name ("gpt2", "gpt2@1") standing for {"preset": name}, as the CLI takes it.
PolicyLike = SpecLike | str


@dataclass(frozen=True)
class RetryPolicy:
    """See [Note: retries]. max_attempts counts the first try; RetryPolicy(max_attempts=1) never retries."""

    max_attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def retryable(self, error: Exception) -> bool:
        if isinstance(error, APIConnectionError):
            return True
        if isinstance(error, APIStatusError):
            return (
                error.status_code in RETRY_STATUSES
                or error.status_code >= 500
                or (error.status_code == 409 and error.type == "not_ready")
            )
        return False

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1 = the first retry)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(self.cap_s, hinted)
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Settings:
    """Resolved once: argument first, then INITIUM_BASE_URL / INITIUM_API_KEY, then the default."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout
    retry: RetryPolicy
    poll_interval: float
    cache_dir: Path | None = None

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout: httpx.Timeout | float | None,
        retry: RetryPolicy | None,
        poll_interval: float,
        cache_dir: str | Path | Literal[False] | None = None,
    ) -> Settings:
        url = (base_url or os.environ.get("INITIUM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        key = api_key or os.environ.get("INITIUM_API_KEY") or None
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        elif not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        cache = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser() if cache_dir else None
        return cls(url, key, timeout, retry or RetryPolicy(), poll_interval, cache)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def build_request(
    request: RequestLike | None = None,
    *,
    spec: SpecLike | None = None,
    policy: PolicyLike | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    slices: Mapping[str, Any] | None = None,
) -> InitRequest:
    """One InitRequest from a whole request, or from its parts; explicit parts override the request's.
    A policy given as a string names a preset."""
    body: dict[str, Any] = {}
    if isinstance(policy, str):
        policy = {"preset": policy}
    if request is not None:
        body = request.model_dump(mode="json") if isinstance(request, InitRequest) else dict(request)
    for key, value in (("spec", spec), ("policy", policy), ("seed", seed), ("dtype", dtype), ("slices", slices)):
        if value is not None:
            body[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return InitRequest.model_validate(body)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def retry_delay(settings: Settings, attempt: int, error: Exception) -> float:
    """Seconds to sleep before retrying a call whose attempt number `attempt` raised `error`; re-raises
    `error` when it is final (see [Note: retries])."""
    if attempt >= settings.retry.max_attempts or not settings.retry.retryable(error):
        raise error
    return settings.retry.delay(attempt, error.retry_after if isinstance(error, APIStatusError) else None)


def parse(call: Call[T], response: httpx.Response) -> T:
    raise_for_status(response)
    return call.parse(response)


def raise_for_status(response: httpx.Response) -> None:
    """The typed exception of an error response (its body must have been read)."""
    if response.status_code >= 400:
        raise status_error(response.status_code, response_body(response), response.headers.get("retry-after"))


def response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def connection_error(settings: Settings, exc: httpx.TransportError) -> APIConnectionError:
    return APIConnectionError(f"cannot reach initium at {settings.base_url}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call, free of I/O: what to send and how to read the answer (the two clients send it)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: cls.model_validate(response.json())


def _text(response: httpx.Response) -> str:
    return response.text


def plan_call(request: RequestLike | None = None, **parts: Any) -> Call[Plan]:
    return Call("POST", "/v1/plans", _model(Plan), build_request(request, **parts).model_dump(mode="json"))


def submit_call(request: RequestLike | None = None, **parts: Any) -> Call[JobStatus]:
    body = build_request(request, **parts).model_dump(mode="json")
    return Call("POST", "/v1/initializations", _model(JobStatus), body)


def status_call(job_id: str) -> Call[JobStatus]:
    return Call("GET", f"/v1/initializations/{job_id}", _model(JobStatus))


def report_call(job_id: str) -> Call[Report]:
    return Call("GET", f"/v1/initializations/{job_id}/report", _model(Report))


def report_html_call(job_id: str) -> Call[str]:
    return Call("GET", f"/v1/initializations/{job_id}/report.html", _text)


def presets_call() -> Call[list[Preset]]:
    return Call("GET", "/v1/presets", lambda r: PresetList.model_validate(r.json()).presets)


def preset_call(ref: str) -> Call[Preset]:
    return Call("GET", f"/v1/presets/{ref}", _model(Preset))


def publish_preset_call(preset: Preset | Mapping[str, Any]) -> Call[Preset]:
    body = preset.model_dump(mode="json") if isinstance(preset, Preset) else dict(preset)
    return Call("POST", "/v1/presets", _model(Preset), body)


def schemes_call() -> Call[list[SchemeInfo]]:
    return Call("GET", "/v1/schemes", lambda r: SchemeList.model_validate(r.json()).schemes)


def record_report_call(report: Report) -> Call[RecordedReport]:
    return Call("POST", "/v1/reports", _model(RecordedReport), report.model_dump(mode="json"))


def file_url(job_id: str, name: str) -> str:
    return f"/v1/initializations/{job_id}/files/{name}"


def weights_url(job_id: str) -> str:
    return f"/v1/initializations/{job_id}/weights"


def is_sharded(status: JobStatus) -> bool:
    """Sharded output lists its shards and then the index (model.safetensors.index.json) last."""
    return bool(status.files) and status.files[-1].name.endswith(".index.json")


def wait_outcome(status: JobStatus, timeout: float | None, started: float) -> JobStatus | None:
    """The final status, or None to poll again; raises when the job failed or time ran out."""
    if status.state == "succeeded":
        return status
    if status.state == "failed":
        raise JobFailedError(status)
    if timeout is not None and time.monotonic() - started > timeout:
        raise JobTimeoutError(f"job {status.id} still {status.state} after {timeout} s")
    return None


@dataclass(frozen=True)
class Fetch:
    """One file of a finished job to download: from `url` to `target`, verified against `sha256`."""

    url: str
    target: Path
    sha256: str
    size: int
    cached: Path | None = None  # where the download cache keeps this file (the target itself without a path)


def artifact_fetches(
    status: JobStatus, path: str | Path | None, cache: DownloadCache | None = None
) -> tuple[Path, list[Fetch]]:
    """Where a finished job's files go, and the path the result names: the safetensors file, or
    for sharded output the index beside its shards (one directory, as Hugging Face lays it out).
    Without `path`: the download cache's folder for this artifact, else a fresh temporary directory."""
    if status.sha256 is None:
        raise IntegrityError(f"job {status.id} succeeded without a sha256")
    cached = cache.folder(status.sha256) if cache else None  # None also when the cache is unusable
    # The folder for sharded output; without a path, also where the single file goes.
    folder = Path(path) if path else cached or Path(tempfile.mkdtemp(prefix="initium-"))
    if is_sharded(status):
        fetches = [Fetch(file_url(status.id, f.name), folder / f.name, f.sha256, f.size, cached and cached / f.name)
                   for f in status.files]  # fmt: skip
        return folder / status.files[-1].name, fetches
    name = f"{status.id[:16]}.safetensors"
    target = Path(path) if path else folder / name
    return target, [Fetch(weights_url(status.id), target, status.sha256, status.size or 0, cached and cached / name)]


class ProgressBar:
    """A job's progress (bytes generated) on stderr while waiting; off when stderr is not a terminal
    (enabled=None), or as asked."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = enabled
        self._bar: tqdm[Any] | None = None

    def show(self, status: JobStatus) -> None:
        bar = self._bar
        if bar is None:
            disable = None if self.enabled is None else not self.enabled
            bar = self._bar = tqdm(
                total=status.progress.bytes_total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"job {status.id[:8]}", disable=disable, file=sys.stderr, leave=False,
            )  # fmt: skip
        bar.n = status.progress.bytes_done
        bar.set_postfix_str(status.state, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def progress_bar(enabled: bool | None) -> Iterator[ProgressBar]:
    bar = ProgressBar(enabled)
    try:
        yield bar
    finally:
        bar.close()


H = TypeVar("H", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[H]):
    """Construction shared by Client and AsyncClient; `http_class` is the httpx client they send with.

    The base URL is, first match wins: the `base_url` argument, $INITIUM_BASE_URL, then
    http://127.0.0.1:8000; the API key: the `api_key` argument, then $INITIUM_API_KEY. Calls are
    retried as [Note: retries] says (`retry=RetryPolicy(max_attempts=1)` turns that off).
    `progress`: bars on stderr when it is a terminal (None), always (True), never (False). Pass
    `http_client` to reuse a configured httpx client (tests pass the app's TestClient, so the real
    client drives the real routes in-process). `cache_dir`: where `initialize()` keeps verified
    artifacts to reuse (initium.client._cache): None for $INITIUM_CACHE_DIR or ~/.cache/initium/artifacts,
    False for no cache.
    """

    http_class: type[H]

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float = 0.2,
        progress: bool | None = None,
        http_client: H | None = None,
        cache_dir: str | Path | Literal[False] | None = None,
    ) -> None:
        self.settings = Settings.resolve(base_url, api_key, timeout, retry, poll_interval, cache_dir)
        self.cache = DownloadCache(self.settings.cache_dir) if self.settings.cache_dir else None
        self.base_url = self.settings.base_url
        self.progress = progress
        self._owns_http = http_client is None
        self._http: H = http_client or self.http_class(
            base_url=self.base_url, timeout=self.settings.timeout, headers=self.settings.headers()
        )
        if http_client is not None:
            self._http.headers.update(self.settings.headers())
