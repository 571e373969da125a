"""Item 11: honest records (a report is checked against the server's own)."""

from __future__ import annotations

from typing import Any

import httpx

from benchmarks._serve import readme_mlp, ready_report
from benchmarks.hostile.harness import Lab, Verdict, probe
from benchmarks.hostile.jobs import finished, short


def shared_job(lab: Lab) -> dict[str, Any]:
    """One finished README MLP job on the shared service, with its report."""
    url = lab.shared().url
    job = finished(url, readme_mlp(31))
    report = ready_report(url, job["id"])
    return {"job": job, "report": report, "weights": f"{url}/v1/initializations/{job['id']}/weights"}


def reports(lab: Lab) -> dict[str, Any]:
    seen = lab.scenario(shared_job)
    genuine = seen["report"]
    forged = {**genuine, "artifact": {**genuine["artifact"], "sha256": "0" * 64}}
    url = f"{lab.shared().url}/v1/reports"
    return {"forged": httpx.post(url, json=forged, timeout=60), "genuine": httpx.post(url, json=genuine, timeout=60)}


@probe("11a", "POST /v1/reports: the report of a job this server ran, its artifact sha256 zeroed",
       "refused (4xx): it differs from the server's own record")  # fmt: skip
def forged_report(lab: Lab) -> Verdict:
    answer = lab.scenario(reports)["forged"]
    return Verdict(400 <= answer.status_code < 500, f"{answer.status_code}: {short(answer.text, 100)}")


@probe("11b", "then the genuine report of the same job", "accepted (200 or 201)")
def genuine_report(lab: Lab) -> Verdict:
    answer = lab.scenario(reports)["genuine"]
    return Verdict(answer.status_code in (200, 201), f"{answer.status_code}: {short(answer.text, 100)}")
