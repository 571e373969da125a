"""The retry policy: which failures are worth another attempt, and how long to wait before it.

[Note: retries] A call is retried on connection errors, 408, 429, 5xx and 409 "not_ready" (a
job's files asked for before it finished), up to `max_attempts`, sleeping a capped, fully
jittered exponential backoff (AWS's "full jitter": uniform in [0, min(cap, base * 2^n)]), or the
server's Retry-After when it gives one (never longer than the cap). Other 409s (a failed job, a
preset version that differs) cannot change by waiting, so they raise at once. Every attempt of one
call carries the same Idempotency-Key, so a server or proxy can tell a retry from a new call;
initium's own POSTs are idempotent anyway (the job id is the request's hash).
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

from initium.client._errors import APIConnectionError, APIStatusError

RETRY_STATUSES = frozenset({408, 429})  # and every 5xx


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

    def wait_after(self, attempt: int, error: Exception) -> float:
        """Seconds to sleep before retrying a call whose attempt number `attempt` raised `error`;
        re-raises `error` when it is final."""
        if attempt >= self.max_attempts or not self.retryable(error):
            raise error
        return self.delay(attempt, error.retry_after if isinstance(error, APIStatusError) else None)


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
