"""Waiting on a job: what one poll's status means, and the progress bar shown meanwhile."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from initium.client._errors import JobFailedError, JobTimeoutError, ReportPendingError
from initium.client._retry import parse_retry_after
from initium.schemas.job import JobStatus


def wait_outcome(status: JobStatus, timeout: float | None, started: float) -> JobStatus | None:
    """The final status, or None to poll again; raises JobFailedError when the job failed, and
    JobTimeoutError when more than `timeout` seconds passed since `started` (time.monotonic())."""
    if status.state == "succeeded":
        return status
    if status.state == "failed":
        raise JobFailedError(status)
    if timeout is not None and time.monotonic() - started > timeout:
        raise JobTimeoutError(f"job {status.id} still {status.state} after {timeout} s")
    return None


def report_wait(pending: ReportPendingError, poll_interval: float, timeout: float | None, started: float) -> float:
    """Seconds to wait before asking again for a report the service is still computing (its
    Retry-After, at most a second past the poll interval); re-raises `pending` once more than
    `timeout` seconds passed since `started` (time.monotonic())."""
    hinted = parse_retry_after(pending.retry_after)
    wait = min(hinted, poll_interval + 1.0) if hinted is not None else poll_interval
    if timeout is None:
        return wait
    left = timeout - (time.monotonic() - started)
    if left <= 0:
        raise pending
    return min(wait, left)  # a last look at the deadline, never a sleep past it


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
