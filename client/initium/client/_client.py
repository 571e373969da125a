"""The synchronous client: submit, wait, download with sha256 verification, and load."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel

from initium.client._errors import (
    APIConnectionError,
    IntegrityError,
    JobFailedError,
    JobTimeoutError,
    status_error,
)
from initium.client._result import InitResult
from initium.schemas.catalog import PresetList
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan
from initium.schemas.presets import Preset
from initium.schemas.report import Report
from initium.schemas.request import InitRequest

if TYPE_CHECKING:
    import torch

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
_CHUNK = 1 << 20

RequestLike = InitRequest | Mapping[str, Any]
SpecLike = BaseModel | Mapping[str, Any]


def build_request(
    request: RequestLike | None = None,
    *,
    spec: SpecLike | None = None,
    policy: SpecLike | None = None,
    seed: int | None = None,
    dtype: str | None = None,
) -> InitRequest:
    """One InitRequest from a whole request, or from its parts; explicit parts override the request's."""
    body: dict[str, Any] = {}
    if request is not None:
        body = request.model_dump(mode="json") if isinstance(request, InitRequest) else dict(request)
    for key, value in (("spec", spec), ("policy", policy), ("seed", seed), ("dtype", dtype)):
        if value is not None:
            body[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return InitRequest.model_validate(body)


class Client:
    """Talks to one initium service.

    The base URL is, first match wins: the `base_url` argument, $INITIUM_BASE_URL, then
    http://127.0.0.1:8000; the API key: the `api_key` argument, then $INITIUM_API_KEY. Pass
    `http_client` to reuse a configured httpx.Client (tests pass the app's TestClient, so the
    real client drives the real routes in-process).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        poll_interval: float = 0.2,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("INITIUM_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.poll_interval = poll_interval
        self._owns_http = http_client is None
        key = api_key or os.environ.get("INITIUM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        if http_client is not None and key:
            self._http.headers["Authorization"] = f"Bearer {key}"

    # -- calls -------------------------------------------------------------------------------

    def plan(self, request: RequestLike | None = None, **parts: Any) -> Plan:
        """The dry run: every tensor the request would produce, nothing generated."""
        body = build_request(request, **parts).model_dump(mode="json")
        return Plan.model_validate(self._json("POST", "/v1/plans", json=body))

    def submit(self, request: RequestLike | None = None, **parts: Any) -> JobStatus:
        """Enqueue (or find) the job for this request and return its status at once."""
        body = build_request(request, **parts).model_dump(mode="json")
        return JobStatus.model_validate(self._json("POST", "/v1/initializations", json=body))

    def presets(self) -> list[Preset]:
        """Every preset the server knows, built-in and published."""
        return PresetList.model_validate(self._json("GET", "/v1/presets")).presets

    def preset(self, ref: str) -> Preset:
        """One preset: 'name' (newest version) or 'name@version'."""
        return Preset.model_validate(self._json("GET", f"/v1/presets/{ref}"))

    def publish_preset(self, preset: Preset | Mapping[str, Any]) -> Preset:
        """Publish a platform policy; identical republishing is a no-op, other rules under a published
        version raise ConflictError (versions are immutable)."""
        body = preset.model_dump(mode="json") if isinstance(preset, Preset) else dict(preset)
        return Preset.model_validate(self._json("POST", "/v1/presets", json=body))

    def status(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self._json("GET", f"/v1/initializations/{job_id}"))

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Poll until the job succeeds; raises JobFailedError or JobTimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job_id)
            if status.state == "succeeded":
                return status
            if status.state == "failed":
                raise JobFailedError(status)
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"job {job_id} still {status.state} after {timeout} s")
            time.sleep(self.poll_interval)

    def report(self, job_id: str) -> Report:
        return Report.model_validate(self._json("GET", f"/v1/initializations/{job_id}/report"))

    def report_html(self, job_id: str, path: str | Path | None = None) -> str:
        """The report as one self-contained HTML page; also written to `path` when given."""
        html = self._send("GET", f"/v1/initializations/{job_id}/report.html").text
        if path is not None:
            Path(path).write_text(html, encoding="utf-8")
        return html

    def download(self, job_id: str, path: str | Path, sha256: str) -> Path:
        """Stream the (single-file) weights to `path` via a temporary file and verify their sha256."""
        return self._download(f"/v1/initializations/{job_id}/weights", path, sha256)

    def download_file(self, job_id: str, name: str, path: str | Path, sha256: str) -> Path:
        """Stream one of the job's files (a shard, or the shard index) and verify its sha256."""
        return self._download(f"/v1/initializations/{job_id}/files/{name}", path, sha256)

    def _download(self, url: str, path: str | Path, sha256: str) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = self._stream_to(fd, url)
            if digest != sha256:
                raise IntegrityError(f"downloaded weights have sha256 {digest}, the server recorded {sha256}")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def initialize(
        self,
        request: RequestLike | None = None,
        *,
        path: str | Path | None = None,
        timeout: float | None = None,
        **parts: Any,
    ) -> InitResult:
        """Submit, wait, download and verify: the initialized weights on local disk.

        Pass a whole request, or spec=, policy=, seed=, dtype= (dicts or schema models). Without
        `path` the file goes to a fresh temporary directory; `result.save(path)` copies it.
        """
        status = self.submit(request, **parts)
        if status.state != "succeeded":
            status = self.wait(status.id, timeout)
        if status.sha256 is None:
            raise IntegrityError(f"job {status.id} succeeded without a sha256")
        if status.files and status.files[-1].name.endswith(".index.json"):
            # Sharded: every file into one directory, as Hugging Face lays a checkpoint out.
            folder = Path(path) if path else Path(tempfile.mkdtemp(prefix="initium-"))
            for f in status.files:
                self.download_file(status.id, f.name, folder / f.name, f.sha256)
            return InitResult(status, folder / status.files[-1].name, self.report(status.id))
        target = Path(path) if path else Path(tempfile.mkdtemp(prefix="initium-")) / f"{status.id[:16]}.safetensors"
        self.download(status.id, target, status.sha256)
        return InitResult(status, target, self.report(status.id))

    def initialize_module(
        self,
        module: torch.nn.Module,
        *,
        policy: SpecLike,
        seed: int = 0,
        dtype: str | None = None,
        roles: Mapping[str, Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> InitResult:
        """Initialize any nn.Module (even on the meta device) in one call and load the result strictly.

        The module is described by `spec_from_module` (tied weights once, `roles` tagging tensors by
        name glob), initialized by the service under `policy`, and loaded back in place.
        """
        from initium.client._torch import load_tensors, module_dtype, spec_from_module

        spec, aliases = spec_from_module(module, roles=roles)
        result = self.initialize(
            spec=spec, policy=policy, seed=seed, dtype=dtype or module_dtype(module), timeout=timeout
        )
        load_tensors(module, result.tensors, aliases)
        return result

    # -- plumbing ----------------------------------------------------------------------------

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach initium at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise status_error(response.status_code, _body(response))
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return self._send(method, url, **kwargs).json()

    def _stream_to(self, fd: int, url: str) -> str:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with self._http.stream("GET", url) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise status_error(response.status_code, _body(response))
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
                        sha.update(chunk)
            except httpx.TransportError as exc:
                raise APIConnectionError(f"download from {self.base_url} broke off: {exc}") from exc
        return sha.hexdigest()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
