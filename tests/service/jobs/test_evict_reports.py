"""Eviction counts the reports kept for the record with the jobs (issue 16: 14 reports of 9.3 MB
filled a volume that INITIUM_STORE_MAX_BYTES eviction never emptied)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from initium.service.jobs.store import REPORTS_PREFIX, JobStore


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
