"""Truncated normals far in a tail: the sampler draws them, and the report's CDF and moments describe
them exactly (issue 15: the CDF, like the moments, differenced two values near 1 in the upper tail)."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from mpmath import mpf

from initium.service.materialize.sampling import reference
from initium.service.plan import distributions as d
from initium.service.summarize.checks import LAW_CHECKS, kolmogorov_pvalue

TAILS = [
    d.TruncatedNormal(0.0, 1.0, 8.0, 9.0),
    d.TruncatedNormal(0.0, 1.0, 30.0, 31.0),
    d.TruncatedNormal(0.0, 1.0, -9.0, -8.0),
    d.TruncatedNormal(0.0, 1.0, 8.0, 11.74734012447073),  # [8, inf) as far as float64 can tell
    d.TruncatedNormal(1.0, 0.5, 5.0, 5.5),  # [8, 9] in std units
    d.TruncatedNormal(0.0, 1.0, -40.0, -36.5),  # below where Phi underflows
]


def _cdf(dist: d.TruncatedNormal, x: torch.Tensor) -> torch.Tensor:
    cdf = LAW_CHECKS.get("truncated_normal").cdf
    assert cdf is not None
    values = cdf(dist, x)
    assert values is not None
    return values


def _exact_cdf(dist: d.TruncatedNormal, x: float) -> float:
    with mpmath.workprec(1100):  # 1 - Phi(37) needs ~1,000 bits
        alpha, beta = ((mpf(v) - dist.loc) / dist.scale for v in (dist.low, dist.high))
        z = min(max((mpf(x) - dist.loc) / dist.scale, alpha), beta)
        return float((mpmath.ncdf(z) - mpmath.ncdf(alpha)) / (mpmath.ncdf(beta) - mpmath.ncdf(alpha)))


@pytest.mark.parametrize("dist", TAILS, ids=lambda law: f"[{law.low:g},{law.high:g}]")
def test_the_cdf_is_exact_in_both_tails(dist: d.TruncatedNormal) -> None:
    x = torch.linspace(dist.low, min(dist.high, dist.low + 1.0), 5, dtype=torch.float64)
    got = _cdf(dist, x)
    for value, point in zip(got.tolist(), x.tolist(), strict=True):
        assert value == pytest.approx(_exact_cdf(dist, point), abs=1e-13)


@pytest.mark.parametrize("dist", TAILS[:5], ids=lambda law: f"[{law.low:g},{law.high:g}]")
def test_the_sampler_draws_the_planned_law(dist: d.TruncatedNormal) -> None:
    """KS against the exact CDF, and the sample's moments against the plan's, on 5,000 draws."""
    n = 5_000
    drawn = torch.sort(reference(dist, torch.arange(n), (0x15, 0xA))).values
    assert dist.low <= drawn[0] and drawn[-1] <= dist.high
    cdf = _cdf(dist, drawn)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    ks = max((ranks / n - cdf).max().item(), (cdf - (ranks - 1) / n).max().item())
    assert kolmogorov_pvalue(ks, n) > 1e-3
    assert abs(drawn.mean().item() - dist.mean) < 5 * dist.std / math.sqrt(n)
    assert drawn.std(unbiased=False).item() == pytest.approx(dist.std, rel=0.05)
