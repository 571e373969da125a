"""Job records in Redis (under Celery, whose broker is already there): no shared volume for them.

    <prefix>:job:<id>            the record (JobRecord JSON)
    <prefix>:job:<id>:request    the normalized request, written once
    <prefix>:job:<id>:plan       the plan made at submit (zlib), written once
    <prefix>:job:<id>:parts      hash: part k -> starts of fan-out part k
    <prefix>:jobs                set of every job id (records() enumerates it)

Every change is a WATCH/MULTI/EXEC transaction on the record's key, retried when another writer
got in first; the state machine of initium.service.jobs.records checks it, as with files.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar, cast

import redis

from initium.schemas.errors import ErrorInfo
from initium.schemas.job import JobRecord, Progress
from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.errors import JobNotFoundError
from initium.service.identity import check_id
from initium.service.jobs.records import Change, apply, fresh, invalidated, not_found, restart
from initium.service.plan.output import plan_json_chunks

T = TypeVar("T")


class RedisJobRecords:
    """JobRecords on a Redis server (`url`: redis://host:6379/0); keys start with `prefix`."""

    def __init__(self, url: str, prefix: str = "initium") -> None:
        self.redis: redis.Redis = redis.Redis.from_url(url)
        self.prefix = prefix

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

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self._key(job_id)))

    def _get(self, job_id: str, part: str = "") -> bytes:
        raw = self.redis.get(self._key(job_id, part))
        if raw is None:
            raise not_found(job_id)
        return cast(bytes, raw)  # a client without decode_responses answers bytes

    def load(self, job_id: str) -> JobRecord:
        return JobRecord.model_validate_json(self._get(job_id))

    def load_request(self, job_id: str) -> InitRequest:
        return InitRequest.model_validate_json(self._get(job_id, ":request"))

    def load_plan(self, job_id: str) -> Plan:
        return Plan.model_validate_json(zlib.decompress(self._get(job_id, ":plan")))

    def update(self, job_id: str, change: Change) -> JobRecord:
        return self._store(job_id, lambda current: apply(current, change))

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

    def count_part_attempt(self, job_id: str, k: int) -> int:
        if not self.exists(job_id):
            raise not_found(job_id)
        return int(self.redis.hincrby(self._key(job_id, ":parts"), str(k), 1))

    def records(self) -> Iterator[JobRecord]:
        for member in self.redis.sscan_iter(f"{self.prefix}:jobs"):
            job_id = member.decode() if isinstance(member, bytes) else str(member)
            try:
                yield self.load(job_id)
            except (JobNotFoundError, ValueError):
                continue

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
