"""Hypothesis-generated specs through a whole job: every spec the planner accepts gives a succeeded
job whose report either holds the probe's layers or says the probe was skipped, and why, in the
summary too; LSUV, when asked for, never fails the job either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from initium.schemas import InitRequest
from initium.schemas.report import Report
from initium.service.errors import RequestInvalidError
from initium.service.jobs.store import REPORT, JobStore
from initium.service.plan.planner import make_plan
from tests.service.pipeline.test_job import run_job
from tests.service.plan.test_fuzz_specs import _leaf, _named, names

small = st.integers(min_value=1, max_value=6)
_extra = st.one_of(
    st.builds(lambda n, k: {"type": f"max_pool{n}d", "kernel_size": k}, st.integers(1, 3), st.integers(1, 3)),
    st.builds(lambda n, k: {"type": f"avg_pool{n}d", "kernel_size": k}, st.integers(1, 3), st.integers(1, 3)),
    st.builds(lambda n, o: {"type": f"adaptive_avg_pool{n}d", "output_size": o}, st.integers(1, 3), small),
    st.just({"type": "lecun_tanh"}),
    st.builds(
        lambda heads, k, v: {"type": "multihead_attention", "embed_dim": 2 * heads, "num_heads": heads, "kdim": k,
                             "vdim": v},
        st.integers(1, 3), small, small,
    ),
)  # fmt: skip
modules = st.recursive(
    st.builds(_named, st.one_of(_leaf(), _extra), names),
    lambda children: st.builds(
        lambda ms, n: _named({"type": "sequential", "modules": ms}, n),
        st.lists(children, min_size=1, max_size=3),
        names,
    ),
    max_leaves=6,
)
POLICY = {"rules": [{"init": {"scheme": "normal", "std": 0.2}}]}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec_modules=st.lists(modules, min_size=1, max_size=4), lsuv=st.booleans())
def test_every_accepted_spec_is_probed_or_says_why_not(tmp_path: Path, spec_modules: list[Any], lsuv: bool) -> None:
    policy = {**POLICY, "lsuv": {"start": "policy"}} if lsuv else POLICY
    body = {"spec": {"name": "fuzz", "modules": spec_modules}, "policy": policy, "report": {"probe_batch": 2}}
    try:
        make_plan(InitRequest.model_validate(body))
    except (ValidationError, RequestInvalidError):
        return  # refused up front (name collisions, a width no law can fill): no job to check
    store = JobStore(tmp_path / str(len(list(tmp_path.iterdir()))))
    job_id = run_job(store, body)
    record = store.records.load(job_id)
    if lsuv and record.state == "failed":  # a network LSUV cannot run fails at policy.lsuv, never with unscaled bytes
        assert record.error is not None and record.error.loc == ["policy", "lsuv"], record.error
        return
    assert record.state == "succeeded", record.error
    report = Report.model_validate_json(store.artifact(job_id, REPORT).read_bytes())
    probe = report.propagation
    assert probe is not None
    if probe.skipped is None:
        assert probe.layers, "a probe that ran recorded no layer: it would read as a clean probe"
    else:
        assert probe.skipped and f"signal propagation skipped: {probe.skipped}" in report.warnings
    if lsuv and report.lsuv is None:
        assert any(w.startswith("LSUV skipped: ") for w in report.warnings)
