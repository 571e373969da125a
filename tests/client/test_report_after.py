"""The client side of weights first (issue 17, item 1): `initialize` returns once the weights are
verified, `result.report` fetches the report when first read and waits while it is pending, and the
CLI says a report is pending instead of failing."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from initium.client import AsyncClient, Client, ReportFailedError, ReportPendingError
from initium.client import cli as client_cli
from initium.client._local import LocalClient
from initium.client._result import InitResult
from initium.schemas.job import JobStatus
from initium.schemas.report import Report
from tests.client.test_retries import STATUS
from tests.service.pipeline.test_job import GOLDEN_SHA256

JOB_ID = STATUS["id"]


def test_local_initialize_returns_before_the_report_is_computed(tmp_path: Path, mlp_request: dict[str, Any]) -> None:
    local = LocalClient(tmp_path / "local", device="cpu")
    result = local.initialize(mlp_request, path=tmp_path / "w.safetensors")
    assert result.sha256 == GOLDEN_SHA256 and (tmp_path / "w.safetensors").stat().st_size > 0
    assert local.status(result.id).report_state == "pending"  # nothing of the report was on the path
    report = result.report  # computed now, once
    assert report.artifact.sha256 == GOLDEN_SHA256 and report.totals.tensors == 4
    assert local.status(result.id).report_state == "ready"
    assert result.report is report


class PendingThenReady:
    """An API whose report is pending `pending` times (409 report_pending, Retry-After: 0), then there."""

    def __init__(self, pending: int, report: Report, final: str = "ready", retry_after: str = "0") -> None:
        self.pending, self.report, self.final, self.asked = pending, report, final, 0
        self.retry_after = retry_after

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if self.asked <= self.pending:
            body = {"error": {"type": "report_pending", "message": "still computing", "loc": ["id"]}}
            return httpx.Response(409, json=body, headers={"Retry-After": self.retry_after})
        if self.final == "failed":
            body = {"error": {"type": "report_failed", "message": "the probe ran out of memory", "loc": ["id"]}}
            return httpx.Response(409, json=body)
        return httpx.Response(200, content=self.report.model_dump_json())


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    from tests.conftest import MLP_REQUEST

    local = LocalClient(tmp_path_factory.mktemp("local"), device="cpu")
    return local.initialize(MLP_REQUEST).report


def test_client_report_waits_while_pending_and_raises_a_failed_one(report: Report) -> None:
    api = PendingThenReady(3, report)
    with Client(http_client=httpx.Client(base_url="http://initium.test", transport=httpx.MockTransport(api))) as c:
        assert c.report(JOB_ID) == report and api.asked == 4
        # As the result's report: fetched on first read only.
        api.asked, api.pending = 0, 2
        result = InitResult(JobStatus.model_validate(STATUS), Path("w.safetensors"), lambda: c.report(JOB_ID))
        assert api.asked == 0
        assert result.report == report and api.asked == 3
        api.asked, api.pending = 0, 10**9
        with pytest.raises(ReportPendingError):
            c.report(JOB_ID, timeout=0.05)
        slow = PendingThenReady(10**9, report, retry_after="1")  # the service says: ask again in 1 s
        with Client(http_client=httpx.Client(base_url="http://t", transport=httpx.MockTransport(slow))) as patient:
            started = time.monotonic()
            with pytest.raises(ReportPendingError):
                patient.report(JOB_ID, timeout=0.3)
            assert time.monotonic() - started < 0.9  # the timeout, not the full Retry-After
        api.asked, api.pending, api.final = 0, 1, "failed"
        with pytest.raises(ReportFailedError, match="out of memory"):
            c.report(JOB_ID)


def test_async_client_report_waits_while_pending(report: Report) -> None:
    api = PendingThenReady(2, report)

    async def go() -> Report:
        http = httpx.AsyncClient(base_url="http://initium.test", transport=httpx.MockTransport(api))
        async with AsyncClient(http_client=http) as client:
            return await client.report(JOB_ID)

    assert asyncio.run(go()) == report and api.asked == 3


@pytest.mark.parametrize(
    ("state", "report_state", "says", "code"),
    [
        ("succeeded", "pending", "weights are ready; its report is still being computed", 0),
        ("running", "pending", "is running; its weights come first", 0),
        ("failed", "pending", "failed: the worker ran out of memory", 1),
    ],
)
def test_cli_report_no_wait_says_what_is_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], state: str, report_state: str, says: str,
    code: int,
) -> None:  # fmt: skip
    """A report not there yet is pending, and says whether the weights are; a failed job is no pending
    report but a failure (exit 1), as the break-it run found `--no-wait` claiming ready weights."""
    error = {"type": "job_failed", "message": "the worker ran out of memory", "loc": []}
    status = {**STATUS, "state": state, "report_state": report_state, **({"error": error} if state == "failed" else {})}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=json.loads(json.dumps(status)))

    real = Client.__init__

    def mocked(self: Client, *args: Any, **kwargs: Any) -> None:
        http = httpx.Client(base_url="http://initium.test", transport=httpx.MockTransport(answer))
        real(self, http_client=http)

    monkeypatch.setattr(Client, "__init__", mocked)
    assert client_cli.main(["report", JOB_ID, "--no-wait"]) == code
    seen = capsys.readouterr()
    assert says in seen.out + seen.err


def test_a_live_part_left_by_a_killed_client_is_removed_by_the_next(tmp_path: Path) -> None:
    """A client killed mid-live-download leaves a part no one would ever name again (its pid and a
    random suffix): the next live download into the same folder removes it, never a live process's."""
    import subprocess
    import sys

    from initium.client._download import live_part

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(gone.stdout), os.getppid()
    job = "b" * 64
    left = tmp_path / f".w.safetensors.{job[:16]}.{dead}-0123abcd.live.partial"
    running = tmp_path / f".w.safetensors.{job[:16]}.{alive}-0123abcd.live.partial"
    other = tmp_path / f".x.safetensors.{job[:16]}.{dead}-0123abcd.live.partial"  # another target's
    for part in (left, running, other):
        part.write_bytes(b"x" * 10)
    part = live_part(job, tmp_path / "w.safetensors", None)
    assert part.parent == tmp_path and part.name.startswith(".w.safetensors.") and not part.exists()
    assert not left.exists() and running.exists() and other.exists()
