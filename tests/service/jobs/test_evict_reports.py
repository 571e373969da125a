"""Eviction counts the reports kept for the record with the jobs (issue 16: 14 reports of 9.3 MB
filled a volume that INITIUM_STORE_MAX_BYTES eviction never emptied)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from initium.service.jobs.store import REPORTS_PREFIX, JobStore
from initium.service.write.s3 import S3Artifacts


def _report(store: JobStore, n: int, size: int, age_s: float) -> str:
    request_id = f"{n:064x}"
    store.artifacts.put_report(request_id, b"x" * size)
    stamp = time.time() - age_s
    os.utime(store.root / "reports" / f"{request_id}.json", (stamp, stamp))
    return request_id


def test_reports_are_evicted_least_recently_used_first_within_the_size(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old, middle, recent = (_report(store, n, 1000, age) for n, age in ((1, 300), (2, 200), (3, 100)))
    assert store.artifacts.get_report(old) == b"x" * 1000  # read just now: the most recently used
    assert store.evict(2000, None, time.time()) == [REPORTS_PREFIX + middle]
    assert store.artifacts.get_report(middle) is None
    assert store.artifacts.get_report(old) is not None and store.artifacts.get_report(recent) is not None
    assert set(store.artifacts.report_usage()) == {old, recent}


def test_reports_expire_by_age(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    old, recent = _report(store, 1, 10, 5000), _report(store, 2, 10, 10)
    assert store.evict(None, 4000, time.time()) == [REPORTS_PREFIX + old]
    assert {k: u.bytes for k, u in store.artifacts.report_usage().items()} == {recent: 10}


def test_reports_in_s3_are_evicted_with_the_jobs(tmp_path: Path, s3_endpoint: str) -> None:
    # On S3 a report's last use is when it was recorded (stamping each read would rewrite the object).
    s3 = S3Artifacts(f"reports-{uuid.uuid4().hex[:12]}", endpoint_url=s3_endpoint)
    s3.ensure_bucket()
    store = JobStore(tmp_path, artifacts=s3)
    older, newer = f"{1:064x}", f"{2:064x}"
    store.artifacts.put_report(older, b"x" * 1000)
    time.sleep(1.1)  # S3's LastModified counts whole seconds
    store.artifacts.put_report(newer, b"y" * 1000)
    assert {k: u.bytes for k, u in store.artifacts.report_usage().items()} == {older: 1000, newer: 1000}
    assert store.evict(1500, None, time.time()) == [REPORTS_PREFIX + older]
    assert store.artifacts.get_report(older) is None and store.artifacts.get_report(newer) == b"y" * 1000
