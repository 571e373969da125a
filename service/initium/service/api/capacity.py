"""How many requests the API plans at once (issue 16): planning slots shared by POST /v1/plans and
POST /v1/initializations.

[Note: planning slots] Planning runs in the API's thread pool, pure Python under the GIL. Four
100,000-tensor plans at once each held their Plan (about 350 MB) and made /healthz's p99 237 ms;
answered to clients that never read, each kept its Plan for as long as its connection lived. A
request now plans only while it holds one of INITIUM_MAX_CONCURRENT_PLANS slots, and gives it back
once nothing of its plan is left in memory: a submission once the job is stored, a plan's answer
once it is sent whole or spooled to a file (routes.plans). A request that finds no free slot within
`wait_s` is refused with 503 and Retry-After (PlanningBusyError): a client retries, and no thread
waits long for a slot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from initium.service.errors import PlanningBusyError

WAIT_S = 5.0  # about what one large plan takes to finish on a fast machine; small ones take milliseconds


class PlanSlots:
    """At most `count` holders at once (a bounded semaphore); `held()` waits up to `wait_s` seconds
    for a slot, then raises PlanningBusyError (503, Retry-After). Thread-safe: the sync routes run in
    the thread pool."""

    def __init__(self, count: int, wait_s: float = WAIT_S) -> None:
        self.count, self.wait_s = count, wait_s
        self._slots = threading.BoundedSemaphore(count)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """One slot, for the duration of the block."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise PlanningBusyError(
                f"the server is planning {self.count} requests, the most it plans at once "
                f"(INITIUM_MAX_CONCURRENT_PLANS); none finished within {self.wait_s:g} s: retry after "
                "Retry-After seconds, or raise INITIUM_MAX_CONCURRENT_PLANS if the API has memory to spare"
            )
        try:
            yield
        finally:
            self._slots.release()
