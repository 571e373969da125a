"""The run's rows: one probe run and cleaned up, the selection `--only` makes, and the table."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from dataclasses import dataclass

from benchmarks.hostile.harness import PROBES, REPO, Lab, Probe, Verdict, item_of
from benchmarks.hostile.jobs import short


@dataclass(frozen=True)
class Row:
    probe: Probe
    verdict: Verdict
    seconds: float

    def markdown(self) -> str:
        held = {True: "yes", False: "**no**", None: "skipped"}[self.verdict.held]
        cells = (self.probe.id, self.probe.input, self.probe.must, short(self.verdict.observed, 200), held)
        return "| " + " | ".join(cells) + f" | {self.seconds:.1f} |"


def run_probe(lab: Lab, entry: Probe) -> Row:
    """One probe, whatever it raises (an error is a probe that did not hold), then its cleanup."""
    started = time.perf_counter()
    try:
        verdict = entry.check(lab)
    except Exception as exc:  # reported in the row, never hidden
        verdict = Verdict(False, f"error: {type(exc).__name__}: {exc}")
    finally:
        lab.cleanup()
    return Row(entry, verdict, time.perf_counter() - started)


def selected(only: list[str] | None) -> list[Probe]:
    """The probes `--only` names (ids like 3a, or item numbers like 12); every probe without it."""
    entries = [PROBES.get(name) for name in PROBES.names()]
    if not only:
        return entries
    unknown = [o for o in only if o not in PROBES and not any(str(item_of(e.id)) == o for e in entries)]
    if unknown:
        raise SystemExit(f"unknown probe {unknown}; valid: {', '.join(PROBES.names())} or item numbers 1-15")
    return [e for e in entries if e.id in only or str(item_of(e.id)) in only]


TABLE_HEAD = "| probe | input | must hold | observed | held | s |\n| --- | --- | --- | --- | --- | ---: |"


def machine() -> str:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{datetime.date.today()}, commit {commit.stdout.strip() or '?'}, {os.cpu_count()} cores "
            f"{platform.machine()}, {memory:.0f} GiB, python {platform.python_version()}")  # fmt: skip
