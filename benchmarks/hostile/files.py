"""Items 1-2: files that say succeeded but cannot be loaded."""

from __future__ import annotations

from typing import Any

import httpx

from benchmarks.hostile.harness import Lab, Verdict, probe
from benchmarks.hostile.jobs import ZEROS, capped_post, header_bomb, megabytes, short

PLAN_CAP = 8_000_000  # "a plan response past a few MB offered as a download, not inlined" (item 8)


def header_requests(lab: Lab) -> dict[str, Any]:
    service = lab.serve(lab.folder("header") / "data")
    single = header_bomb()
    sharded = {**single, "output": {"format": "sharded"}}
    seen: dict[str, Any] = {}
    for name, body in (("single", single), ("sharded", sharded)):
        response = httpx.post(f"{service.url}/v1/initializations", json=body, timeout=300)
        seen[name] = (response.status_code, response.text)
    seen["plan"] = capped_post(f"{service.url}/v1/plans", single, 64_000_000, timeout=lab.size(600, 240))
    return seen


def refused(seen: tuple[int, str], statuses: tuple[int, ...] = (413, 422)) -> Verdict:
    code, text = seen
    return Verdict(code in statuses, f"{code}: {short(text, 120)}")


@probe("1a", "20,000 tensors with 7.5 KB names (10 KB request; a 151 MB header), single file",
       "refused at plan time (413/422): safetensors refuses headers past 100 MB")  # fmt: skip
def header_single(lab: Lab) -> Verdict:
    return refused(lab.scenario(header_requests)["single"])


@probe("1b", "the same request with output sharded (one shard holds every tensor)",
       "refused at plan time: every shard's header is checked")  # fmt: skip
def header_sharded(lab: Lab) -> Verdict:
    return refused(lab.scenario(header_requests)["sharded"])


@probe("1c", "POST /v1/plans for the same request", f"the answer is bounded: at most {megabytes(PLAN_CAP)}")
def header_plan(lab: Lab) -> Verdict:
    code, read, seconds, download = lab.scenario(header_requests)["plan"]
    more = "+ (stopped reading)" if read > 64_000_000 else ""
    kind = "a download" if download else "inline"
    return Verdict(read <= PLAN_CAP, f"{code}, {megabytes(read)}{more} {kind} in {seconds:.1f} s")


@probe("2a", "a manifest tensor named __metadata__", "422 (a reserved name), nothing queued")
def reserved_name(lab: Lab) -> Verdict:
    body = {"spec": {"name": "m", "tensors": [{"name": "__metadata__", "shape": [4, 4]}]}, "policy": ZEROS}
    response = httpx.post(f"{lab.shared().url}/v1/initializations", json=body, timeout=60)
    return refused((response.status_code, response.text), (422,))
