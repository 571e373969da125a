"""Job records in Redis (under Celery, whose broker is already there): no shared volume for them.

    <prefix>:job:<id>            the record (JobRecord JSON)
    <prefix>:job:<id>:request    the normalized request, written once
    <prefix>:job:<id>:plan       the plan made at submit (zlib), written once
    <prefix>:job:<id>:parts      hash: part k -> starts of fan-out part k
    <prefix>:jobs                set of every job id (records() enumerates it)

Every change is a WATCH/MULTI/EXEC transaction on the record's key, retried when another writer
got in first; the state machine of initium.service.jobs.records checks it, as with files.

[Note: Redis down] Every call that reaches Redis raises RecordsUnavailableError (503 with
Retry-After, the reason and the fix) when Redis refuses, times out or is still loading its data,
never redis-py's own exceptions (issue 16: they answered 500). A pooled connection that Redis
closed (it restarted) is retried once on a fresh one, so the first call after a restart succeeds.
The records live only in Redis: it must persist them (appendonly yes, as docker-compose.yml runs
it), or a restart loses every accepted job; readiness says `volatile` when it does not.
"""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Concatenate, ParamSpec, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from initium.schemas.errors import ErrorInfo
from initium.schemas.job import JobRecord, Progress
from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.errors import JobNotFoundError, RecordsUnavailableError
from initium.service.identity import check_id
from initium.service.jobs.records import Change, apply, fresh, invalidated, not_found, restart
from initium.service.plan.output import plan_json_chunks

T = TypeVar("T")
P = ParamSpec("P")

# Errors that say "Redis is not there now" (BusyLoadingError is a ConnectionError: a restarted Redis
# loading its data set); retried once on a fresh connection, then RecordsUnavailableError.
_DOWN = (redis.ConnectionError, redis.TimeoutError)


def _guarded(method: Callable[Concatenate[RedisJobRecords, P], T]) -> Callable[Concatenate[RedisJobRecords, P], T]:
    """A RedisJobRecords method whose Redis failures raise RecordsUnavailableError ([Note: Redis down])."""

    @functools.wraps(method)
    def call(records: RedisJobRecords, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with records.available():
            return method(records, *args, **kwargs)

    return call


class RedisJobRecords:
    """JobRecords on a Redis server (`url`: redis://host:6379/0); keys start with `prefix`. A Redis
    that is down raises RecordsUnavailableError (see [Note: Redis down])."""

    def __init__(self, url: str, prefix: str = "initium") -> None:
        # One retry on a fresh connection: a pooled one that a restarted Redis closed fails on first use.
        # A connect that hangs is cut at 2 s (the API answers 503; /readyz stays within its 3 s).
        self.redis: redis.Redis = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 1), retry_on_error=list(_DOWN), socket_connect_timeout=2
        )
        self.prefix = prefix
        kwargs = self.redis.connection_pool.connection_kwargs  # host and port only: never the URL's password
        self.where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    @contextlib.contextmanager
    def available(self) -> Iterator[None]:
        """Inside: Redis refusing, timing out or loading raises RecordsUnavailableError naming the
        cause and the fix; any other error passes as it is."""
        try:
            yield
        except _DOWN as exc:
            reason = type(exc).__name__
            raise RecordsUnavailableError(
                f"the job records' Redis at {self.where} (INITIUM_BROKER_URL) is unavailable ({reason}): check that "
                "it is up and reachable from the API and the workers; nothing was lost: retry later",
                reason=reason,
            ) from exc

    def readiness(self) -> str:
        """For /readyz: "ok", or "volatile" when Redis keeps the records in memory only (appendonly no
        and no RDB snapshots: a restart loses every accepted job; see [Note: Redis down]), which is
        still ready. RecordsUnavailableError when Redis does not answer. A Redis that refuses CONFIG
        (managed services rename it) counts as ok: its persistence is the provider's."""
        with self.available():
            self.redis.ping()
            try:
                config = {_text(k): _text(v) for k, v in self.redis.config_get("appendonly", "save").items()}
            except redis.ResponseError:
                return "ok"
        volatile = config.get("appendonly") == "no" and not config.get("save", "").strip()
        return "volatile" if volatile else "ok"

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.prefix}:job:{check_id(job_id)}{part}"

    def _transaction(self, job_id: str, body: Callable[[redis.client.Pipeline, JobRecord | None], T]) -> T:
        """Run `body(pipe, current record)` with the record's key watched, again until no other
        writer changed the key in between. `body` queues its writes after pipe.multi()."""
        key = self._key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    raw = pipe.get(key)
                    current = None if raw is None else JobRecord.model_validate_json(raw)
                    result = body(pipe, current)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _set(self, pipe: redis.client.Pipeline, record: JobRecord) -> JobRecord:
        pipe.set(self._key(record.id), record.model_dump_json())
        return record

    @_guarded
    def create(self, request: InitRequest, plan: Plan, progress: Progress) -> tuple[JobRecord, bool]:
        job_id = plan.request_id

        def body(pipe: redis.client.Pipeline, current: JobRecord | None) -> tuple[JobRecord, bool]:
            if current is not None and current.state != "failed":
                return current, False
            pipe.multi()
            pipe.delete(self._key(job_id, ":parts"))
            if current is not None:
                return self._set(pipe, restart(current, progress)), True
            pipe.set(self._key(job_id, ":request"), request.model_dump_json())
            # Compressed: a plan is ~0.5 KB of JSON per tensor and one Redis string holds 512 MB; JSON
            # this repetitive shrinks over 10x at level 1, so even the largest accepted plan fits.
            pipe.set(self._key(job_id, ":plan"), _compressed(plan_json_chunks(plan)))
            pipe.sadd(f"{self.prefix}:jobs", job_id)
            return self._set(pipe, fresh(job_id, progress)), True

        return self._transaction(job_id, body)

    @_guarded
    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id)))

    def _get(self, job_id: str, part: str = "") -> bytes:
        raw = self.redis.get(self._key(job_id, part))
        if raw is None:
            raise not_found(job_id)
        return cast(bytes, raw)  # a client without decode_responses answers bytes

    @_guarded
    def load(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(self._get(job_id))

    @_guarded
    def load_request(self, job_id: str) -> InitRequest:
        return InitRequest.model_validate_json(self._get(job_id, ":request"))

    @_guarded
    def load_plan(self, job_id: str) -> Plan:
        return Plan.model_validate_json(zlib.decompress(self._get(job_id, ":plan")))

    @_guarded
    def update(self, job_id: str, change: Change) -> JobRecord:
        return self._store(job_id, lambda current: apply(current, change))

    @_guarded
    def invalidate(self, job_id: str, error: ErrorInfo) -> JobRecord:
        return self._store(job_id, lambda c: invalidated(c, error) if c.state == "succeeded" else None)

    def _store(self, job_id: str, decide: Callable[[JobRecord], JobRecord | None]) -> JobRecord:
        """The record after `decide` (None: keep the current one), written in one transaction."""

        def body(pipe: redis.client.Pipeline, current: JobRecord | None) -> JobRecord:
            if current is None:
                raise not_found(job_id)
            stored = decide(current)
            if stored is None:
                pipe.unwatch()
                return current
            pipe.multi()
            return self._set(pipe, stored)

        return self._transaction(job_id, body)

    @_guarded
    def count_part_attempt(self, job_id: str, k: int) -> int:
        if not self.exists(job_id):
            raise not_found(job_id)
        return int(self.redis.hincrby(self._key(job_id, ":parts"), str(k), 1))

    def records(self) -> Iterator[JobRecord]:
        with self.available():  # a generator: the guard must be inside it, where Redis is called
            for member in self.redis.sscan_iter(f"{self.prefix}:jobs"):
                job_id = member.decode() if isinstance(member, bytes) else str(member)
                try:
                    yield self.load(job_id)
                except (JobNotFoundError, ValueError):
                    continue

    @_guarded
    def delete(self, job_id: str) -> None:
        keys = [self._key(job_id, part) for part in ("", ":request", ":plan", ":parts")]
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: the job goes at once
            pipe.delete(*keys)
            pipe.srem(f"{self.prefix}:jobs", job_id)
            pipe.execute()


__all__ = ["RedisJobRecords"]


def _compressed(pieces: Iterable[bytes]) -> bytes:
    """zlib level 1 of the pieces joined, without joining them (a large plan's JSON is never one string)."""
    z = zlib.compressobj(1)
    return b"".join([*(z.compress(p) for p in pieces), z.flush()])


def _text(value: object) -> str:
    """A CONFIG GET key or value as text (redis-py answers str there, bytes elsewhere)."""
    return value.decode() if isinstance(value, bytes) else str(value)
