"""The report's checks: p-values as scipy computes them, no false flags on any scheme in any dtype,
flags on a wrong law, power sums that add across shards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from initium.service.materialize.sampling import Stream, sample
from initium.service.materialize.tensor import TORCH_DTYPES
from initium.service.plan import distributions as d
from initium.service.plan.schemes import list_schemes, resolve
from initium.service.summarize.checks import fit, flags, kolmogorov_pvalue
from initium.service.summarize.stats import measure
from tests.service.plan.test_schemes import _geometry, _params

CPU = torch.device("cpu")


@pytest.mark.parametrize(("d_stat", "n"), [(0.01, 20_000), (0.02, 5_000), (0.005, 20_000), (0.05, 1_000), (0.1, 50)])
def test_kolmogorov_pvalue_matches_scipy(d_stat: float, n: int) -> None:
    assert kolmogorov_pvalue(d_stat, n) == pytest.approx(stats.kstwo.sf(d_stat, n), abs=0.02 if n < 100 else 0.005)


def test_fit_is_scipys_ks_test_on_the_sample() -> None:
    dist = d.TruncatedNormal(0.1, 0.5, -0.4, 0.9)
    values = sample(dist, (45_000,), Stream((1, 1), CPU))
    check = fit(values, dist, "float64")
    assert check is not None and check.sample_size == 20_000
    ours = values[::2][:20_000].numpy()  # the stride is numel // 20,000
    reference = stats.kstest(ours, stats.truncnorm(-1.0, 1.6, loc=0.1, scale=0.5).cdf)
    assert check.ks_statistic == pytest.approx(reference.statistic, rel=1e-9)
    assert check.ks_pvalue == pytest.approx(reference.pvalue, abs=0.02)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("name", list_schemes())
def test_no_false_flags(name: str, dtype: str) -> None:
    geometry = _geometry(name)
    dist = resolve(_params(name), geometry)
    values = sample(dist, geometry.shape, Stream((17, 3), CPU)).to(TORCH_DTYPES[dtype])
    m = measure(values)
    assert flags(m.n_finite, m.mean, m.std, m.central_m4, dist, dtype) == []
    check = fit(values, dist, dtype)
    if check is not None and check.ks_pvalue is not None:
        assert check.ks_pvalue > 1e-4


def test_a_wrong_law_is_flagged() -> None:
    values = sample(d.Normal(0.0, 1.1), (50_000,), Stream((5, 5), CPU))
    m = measure(values)
    out = flags(m.n_finite, m.mean, m.std, m.central_m4, d.Normal(0.0, 1.0), "float32")
    assert len(out) == 1 and out[0].startswith("std 1.09")
    check = fit(values, d.Normal(0.0, 1.0), "float32")
    assert check is not None and check.ks_pvalue is not None and check.ks_pvalue < 1e-6


def test_the_cpu_pass_measures_what_torch_does() -> None:
    """The compiled one-pass CPU measure equals the torch pass (the CUDA path), NaN, Inf, zeros,
    half-precision and lengths that are not a multiple of its block included."""
    from initium.service.summarize.stats import _measure_torch

    values = sample(d.Normal(0.3, 2.0), (300_001,), Stream((8, 8), CPU))
    values[::997] = 0.0
    values[5], values[77_777], values[-1] = math.nan, math.inf, -math.inf
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        x = values.to(dtype)
        ours, reference = measure(x), _measure_torch(x.reshape(-1))
        assert (ours.nan_count, ours.inf_count, ours.zero_fraction, ours.n_finite) == (
            reference.nan_count, reference.inf_count, reference.zero_fraction, reference.n_finite)  # fmt: skip
        assert (ours.min, ours.max) == (reference.min, reference.max)
        assert ours.power_sums == pytest.approx(reference.power_sums, rel=1e-12)
        assert ours.mean == pytest.approx(reference.mean, rel=1e-12) and ours.std == pytest.approx(reference.std)


def test_power_sums_of_shards_add_up_to_the_whole() -> None:
    stream = Stream((9, 9), CPU)
    whole = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream))
    top = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream, [(0, 20), (0, 50)]))
    bottom = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream, [(20, 64), (0, 50)]))
    combined = np.add(top.power_sums, bottom.power_sums)
    assert np.allclose(combined, whole.power_sums, rtol=1e-12)
    n = top.n_finite + bottom.n_finite
    mean = combined[0] / n
    assert mean == pytest.approx(whole.mean) and math.sqrt(combined[1] / n - mean**2) == pytest.approx(whole.std)
