"""The report's checks: KS p-values exact for the sample's size, no false flags on any scheme in any
dtype nor on the jobs of issue 15 (the README's MLP, a TransformerEncoder's small bias, LSUV's rescaled
weights), the std test exact for normal draws and conservative for bounded laws, a 5% scale error
flagged, values that are not finite counted (the moments themselves: test_stats.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from initium.client import spec_from_module
from initium.schemas import InitRequest
from initium.schemas.plan import Plan
from initium.schemas.report import Report
from initium.service.jobs.store import REPORT, JobStore
from initium.service.materialize.sampling import Stream, sample
from initium.service.materialize.tensor import TORCH_DTYPES, materialize
from initium.service.plan import distributions as d
from initium.service.plan.distributions import planned_distribution
from initium.service.plan.planner import make_plan
from initium.service.plan.schemes import list_schemes, resolve
from initium.service.summarize.checks import LAW_CHECKS, _variance_pvalue, fit, flags, rescaled
from initium.service.summarize.kolmogorov import kolmogorov_pvalue
from initium.service.summarize.report import tensor_stats
from initium.service.summarize.stats import measure
from tests.service.pipeline.test_job import run_job
from tests.service.plan.test_schemes import _geometry, _params

CPU = torch.device("cpu")
README_MLP = {"name": "mlp", "modules": [
    {"type": "linear", "name": "fc1", "in_features": 784, "out_features": 512}, {"type": "relu"},
    {"type": "linear", "name": "fc2", "in_features": 512, "out_features": 10}]}  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 50, 140])
@pytest.mark.parametrize("p", [0.999, 0.5, 0.099, 1e-2, 1e-4, 1e-6])
def test_kolmogorov_pvalue_is_exact_for_small_samples(n: int, p: float) -> None:
    """scipy's kstwo is exact up to n = 140 (the same matrix formula); Stephens' form, which the
    report used before, is 0.0175 off at n = 10."""
    d_stat = float(stats.kstwo.isf(p, n))
    assert kolmogorov_pvalue(d_stat, n) == pytest.approx(stats.kstwo.sf(d_stat, n), rel=1e-4, abs=1e-12)


@pytest.mark.parametrize("n", [1_000, 5_000, 20_000])
@pytest.mark.parametrize("p", [0.9, 0.5, 0.1, 1e-2, 1e-4])
def test_kolmogorov_pvalue_for_large_samples(n: int, p: float) -> None:
    d_stat = float(stats.kstwo.isf(p, n))
    assert kolmogorov_pvalue(d_stat, n) == pytest.approx(p, abs=1.5e-3)


def test_fit_is_scipys_ks_test_on_the_sample() -> None:
    dist = d.TruncatedNormal(0.1, 0.5, -0.4, 0.9)
    values = sample(dist, (45_000,), Stream((1, 1), CPU))
    check = fit(values, dist, "float64")
    assert check is not None and check.sample_size == 20_000
    ours = values[::2][:20_000].numpy()  # the stride is numel // 20,000
    reference = stats.kstest(ours, stats.truncnorm(-1.0, 1.6, loc=0.1, scale=0.5).cdf)
    assert check.ks_statistic == pytest.approx(reference.statistic, rel=1e-9)
    assert check.ks_pvalue == pytest.approx(reference.pvalue, abs=1.5e-3)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("name", list_schemes())
def test_no_false_flags(name: str, dtype: str) -> None:
    geometry = _geometry(name)
    dist = resolve(_params(name), geometry)
    values = sample(dist, geometry.shape, Stream((17, 3), CPU)).to(TORCH_DTYPES[dtype])
    assert flags(measure(values), dist, dtype) == []
    check = fit(values, dist, dtype)
    if check is not None and check.ks_pvalue is not None:
        assert check.ks_pvalue > 1e-4


def test_a_wrong_law_is_flagged() -> None:
    values = sample(d.Normal(0.0, 1.1), (50_000,), Stream((5, 5), CPU))
    out = flags(measure(values), d.Normal(0.0, 1.0), "float32")
    assert len(out) == 1 and out[0].startswith("std 1.09") and "beyond sampling error (p = " in out[0]
    check = fit(values, d.Normal(0.0, 1.0), "float32")
    assert check is not None and check.ks_pvalue is not None and check.ks_pvalue < 1e-6


def _job_flags(plan: Plan, seed: int, names: set[str] | None = None) -> dict[str, list[str]]:
    """Each tensor's flags as its job's report computes them (tensor_stats; its other checks skipped)."""
    return {
        t.name: flags(measure(materialize(t, seed, CPU)), planned_distribution(t), t.dtype, len(plan.tensors))
        for t in plan.tensors
        if names is None or t.name in names
    }


def test_the_readme_mlp_carries_no_flag_on_20_seeds() -> None:
    """Issue 15: 9 of these 20 jobs carried "fc2.bias ... beyond sampling error" (10 draws of
    U(-b, b), their std tested against the sample's own fourth moment)."""
    plan = make_plan(InitRequest.model_validate({"spec": README_MLP, "policy": {"preset": "torch-default"}}))
    for seed in range(20):
        assert _job_flags(plan, seed) == {name: [] for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
    bias = next(t for t in plan.tensors if t.name == "fc2.bias")
    issue = tensor_stats(bias, materialize(bias, 0, CPU), tests=4)  # the issue's example
    assert issue.std == pytest.approx(0.0138283, abs=5e-8) and issue.expected_std == pytest.approx(0.0255155, abs=5e-8)
    assert issue.flags == []


def test_a_transformer_encoders_small_bias_is_not_flagged() -> None:
    """Issue 15: linear2.bias (128 values) of nn.TransformerEncoder under torch-default; seed 0 drew
    std 0.0312 against 0.0361 and was flagged."""
    layer = nn.TransformerEncoderLayer(128, 4, 256, batch_first=True)
    manifest, _ = spec_from_module(nn.TransformerEncoder(layer, 2))
    policy = {"preset": "torch-default", "fan_convention": "torch"}
    plan = make_plan(InitRequest.model_validate({"spec": manifest, "policy": policy}))
    biases = {f"layers.{i}.linear2.bias" for i in range(2)}
    for seed in range(20):
        assert _job_flags(plan, seed, biases) == {name: [] for name in biases}


LAWS = [d.Normal(0.0, 0.02), d.Uniform(-0.05, 0.05), d.TruncatedNormal(0.0, 0.02, -0.04, 0.04)]


@pytest.mark.parametrize("factor", [0.95, 1.05])
@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.family)
def test_a_5_percent_scale_error_on_10000_values_is_flagged(law: d.Distribution, factor: float) -> None:
    """Even in a job of 1,000 tensors, whose flags share the job's level."""
    for seed in range(5):
        values = (sample(law, (100, 100), Stream((seed, 9), CPU)) * factor).float()
        out = flags(measure(values), law, "float32", tests=1_000)
        assert len(out) == 1 and out[0].startswith("std ")


@pytest.mark.parametrize("law", LAWS, ids=lambda law: law.family)
def test_the_std_test_is_exact_for_normal_draws_and_conservative_for_bounded_laws(law: d.Distribution) -> None:
    """4,000 tensors of 10 values: the std test's p-values are uniform for normal draws (chi2(n - 1)
    is exact), and no smaller than uniform for the bounded laws, for which it is conservative."""
    kurtosis = LAW_CHECKS.get(law.family).kurtosis
    assert kurtosis is not None
    std = sample(law, (4_000, 10), Stream((2, 2), CPU)).std(dim=1, unbiased=False)
    pvalues = np.array([_variance_pvalue(float(s), law.std, 10, kurtosis(law), 0.0) for s in std])
    if law.family == "normal":
        assert stats.kstest(pvalues, "uniform").pvalue > 1e-3
    for level in (0.2, 0.05, 0.01):
        hits = int((pvalues < level).sum())
        assert hits <= stats.binom.isf(1e-4, 4_000, level), (level, hits)


@pytest.mark.parametrize(("low", "high"), [(-2.0, 2.0), (-0.4, 0.9), (0.0, math.inf), (1.5, 4.0), (-math.inf, -3.0)])
def test_truncated_normal_kurtosis_is_scipys(low: float, high: float) -> None:
    kurtosis = LAW_CHECKS.get("truncated_normal").kurtosis
    assert kurtosis is not None
    excess = float(stats.truncnorm(low, high).stats(moments="k"))
    assert kurtosis(d.TruncatedNormal(0.0, 1.0, low, high)) == pytest.approx(3 + excess, rel=1e-9)


def test_eye_kurtosis_is_its_patterns_with_noise() -> None:
    law = d.Eye(gain=1.3, rows=6, cols=4, tile=False, noise=0.2)
    pattern = np.zeros((6, 4))
    pattern[range(4), range(4)] = 1.3
    centred = pattern - pattern.mean()
    m4 = (centred**4).mean() + 6 * 0.2**2 * (centred**2).mean() + 3 * 0.2**4
    kurtosis = LAW_CHECKS.get("eye").kurtosis
    assert kurtosis is not None and kurtosis(law) == pytest.approx(m4 / law.std**4, rel=1e-12)


@pytest.mark.parametrize("name", list_schemes())
def test_a_rescaled_law_has_the_rescaled_moments(name: str) -> None:
    dist = resolve(_params(name), _geometry(name))
    scaled = rescaled(dist, 1.343)
    if LAW_CHECKS.get(dist.family).scaled is None:
        assert scaled is None
        return
    assert scaled is not None and scaled.family == dist.family
    assert (scaled.mean, scaled.std) == pytest.approx((1.343 * dist.mean, 1.343 * dist.std), rel=1e-12, abs=1e-300)


def _deep(start: str) -> dict[str, object]:
    modules: list[dict[str, object]] = []
    for _ in range(3):
        modules += [{"type": "linear", "in_features": 48, "out_features": 48}, {"type": "tanh"}]
    rules = [{"init": {"scheme": "normal"}}, {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]
    policy = {"rules": rules, "lsuv": {"start": start}}
    return {"spec": {"name": "deep", "modules": modules}, "policy": policy, "seed": 11}


@pytest.mark.parametrize("start", ["policy", "orthogonal"])
def test_lsuv_rescaled_weights_expect_the_rescale_and_carry_no_flag(tmp_path: Path, start: str) -> None:
    """Issue 15: a weight LSUV rescaled was flagged against the std before the rescale."""
    body = _deep(start)
    store = JobStore(tmp_path)
    report = Report.model_validate_json(store.artifact(run_job(store, body), REPORT).read_bytes())
    planned = {t.name: t for t in make_plan(InitRequest.model_validate(body)).tensors}
    assert report.lsuv is not None
    scales = {f"{layer.name}.weight": layer.scale for layer in report.lsuv}
    assert any(abs(s - 1) > 0.3 for s in scales.values())
    for t in report.tensors:
        assert t.flags == [], t.name
        scale = scales.get(t.name, 1.0)
        assert t.rescale == (None if scale == 1.0 else scale)
        expected = planned[t.name].expected_std
        assert expected is not None and t.expected_std == pytest.approx(expected * scale, rel=1e-12)


def test_values_that_are_not_finite_are_counted_in_the_flags() -> None:
    """Issue 15, item 6: a draw that overflows its dtype is counted and said so."""
    law = d.Normal(0.0, 3e4)
    drawn = sample(law, (4_000,), Stream((4, 4), CPU))
    values = drawn.to(torch.float16)
    values[7] = math.nan
    overflowed = int((drawn.abs() >= 65520).sum()) - int(drawn[7].abs() >= 65520)  # float16's rounding edge
    assert overflowed > 10
    out = flags(measure(values), law, "float16")
    assert out[:2] == [
        f"{overflowed} of 4,000 values are infinite: the draw overflowed float16 (beyond +-65504)",
        "1 of 4,000 values are NaN: not finite",
    ]


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170])
def test_laws_at_float64_extremes_never_fail_the_flags(scale: float) -> None:
    """std 1e-300 underflowed the expected variance to 0: ZeroDivisionError failed the job."""
    m = measure(sample(d.Normal(0.0, scale), (64, 64), Stream((5, 5), CPU), dtype=torch.float64))
    assert flags(m, d.Normal(0.0, scale), "float64") == []
    # A wrong law (uniform of the same reach) is flagged where float64 sums can measure the values, and
    # nothing raises where they cannot (their squares underflow): a statistic never fails a job.
    wrong = flags(m, d.Uniform(-scale, scale), "float64")
    assert bool(wrong) == (1e-150 < scale < 1e150)


def test_subnormal_draws_are_not_flagged_for_their_rounding() -> None:
    """float16 N(0, 1e-7) lies among float16's subnormals (step 6e-8): its std moved 1.6% and was flagged."""
    values = sample(d.Normal(0.0, 1e-7), (1000, 1000), Stream((6, 6), CPU), dtype=torch.float16)
    assert flags(measure(values), d.Normal(0.0, 1e-7), "float16") == []
