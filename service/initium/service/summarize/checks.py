"""Checks for the report: each tensor against its own law (KS), and flags where its values are not
finite or its moments differ from its law's beyond sampling error.

Everything runs on the tensor's device on bounded work: KS on a strided sample of at most KS_SAMPLE
values in float64. What each law family allows (a KS test against its CDF, values at its bounds, the
law's kurtosis for the std's sampling error, an exact RMS, orthogonality, a rescaled copy) is its
entry in LAW_CHECKS; the spectrum is summarize.spectral's.

[Note: calibrated flags] (issue 15) A flag is a test at a level the whole job shares: a job of
correctly drawn tensors carries a sampling-error flag with probability at most JOB_ALPHA, however
many tensors it has (Bonferroni: the mean and the std of each of its T tensors are each tested at
JOB_ALPHA / 2T). The sample mean is taken as normal with sd sigma / sqrt(n): exact for normal draws,
and conservative for the bounded laws, whose sums have lighter tails. The sample variance s^2
(divisor n) is taken as c chi2(nu): for normal draws exactly chi2(n - 1) times sigma^2 / n (Casella
and Berger, Statistical Inference, Theorem 5.3.1); for another law, whichever is wider of that and
the chi2 matched to the exact mean and variance of s^2 under the law, from the law's own fourth
moment (never the sample's, whose own sampling error at n = 10 flagged 9 of 20 jobs of the README's
MLP). A law lighter-tailed than the normal (uniform, truncated normal) keeps the normal chi2(n - 1),
which is conservative for it in both tails from n = 3 on and within 1.3 times the nominal rate at
n = 2 (10^6 draws per n from 2 to 128, tails down to 1e-4), where the matched chi2 alone gives 17
times too many lower-tail hits at n = 10; a heavier-tailed one (a sparse or noisy-eye pattern)
gets the wider matched chi2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from initium.schemas.dtypes import DTYPES
from initium.schemas.report import FitCheck
from initium.service.plan import distributions as d
from initium.service.registry import Registry
from initium.service.summarize.kolmogorov import kolmogorov_pvalue as kolmogorov_pvalue  # also checks' own
from initium.service.summarize.stats import Measured

KS_SAMPLE = 20_000
JOB_ALPHA = 1e-3  # the chance that a job of correctly drawn tensors carries any sampling-error flag
# The smallest gaps a low-precision dtype leaves between neighbouring values, relative: rounding
# alone moves a std by about this much, which sampling-error flags must not mistake for a bug.
ROUNDING = {
    name: 2.0**-info.mantissa_bits
    for name, info in ((n, DTYPES.get(n)) for n in DTYPES.names())
    if info.mantissa_bits is not None
}


# The scales whose squares (and the fourth powers of the deviations) float64 sums can hold.
MEASURABLE_SCALE = (1e-150, 1e150)
# The gap between a dtype's subnormal values: below its smallest normal number rounding is absolute,
# not relative (a float16 N(0, 1e-7) moved its std by 1.6% and was flagged, issue 15).
SUBNORMAL = {
    name: info.smallest_subnormal
    for name, info in ((n, DTYPES.get(n)) for n in DTYPES.names())
    if info.smallest_subnormal is not None
}


def _never(dist: Any) -> bool:
    return False


def _always(dist: Any) -> bool:
    return True


@dataclass(frozen=True)
class LawCheck:
    """What the report can check of a tensor drawn from one law family.

    cdf: the law's CDF at float64 values, for the KS test (None: no KS; the fit still counts values).
    bounds: the law's support [low, high], whose hits the report counts (None: unbounded).
    exact_rms: whether the law fixes the entries' RMS exactly (the std flag's tolerance is then tight).
    gram_gain: the gain g with W W^T = g^2 I (or W^T W), for the orthogonality error (None: not orthogonal).
    kurtosis: an entry's m4 / sigma^4 under the law, for the std's sampling error where the RMS is not
        exact (None: no such test). A pattern (a sparse law's zeros, an eye's diagonal) counts as drawn
        at random, which only widens the test.
    scaled: the law's parameters that scale with its values, for the law of its draws times a factor
        (LSUV's rescale); None where the family cannot state that law.
    """

    cdf: Callable[[Any, torch.Tensor], torch.Tensor | None] | None = None
    bounds: Callable[[Any], tuple[float, float]] | None = None
    exact_rms: Callable[[Any], bool] = _never
    gram_gain: Callable[[Any], float] | None = None
    kurtosis: Callable[[Any], float] | None = None
    scaled: tuple[str, ...] | None = None


LAW_CHECKS: Registry[LawCheck] = Registry("law check")


def _uniform_cdf(dist: d.Uniform, x: torch.Tensor) -> torch.Tensor:
    return ((x - dist.low) / (dist.high - dist.low)).clamp(0, 1)


def _normal_cdf(dist: d.Normal, x: torch.Tensor) -> torch.Tensor | None:
    if dist.scale <= 0:
        return None
    normal: torch.Tensor = torch.special.ndtr((x - dist.loc) / dist.scale)
    return normal


def _truncated_cdf(dist: d.TruncatedNormal, x: torch.Tensor) -> torch.Tensor:
    """(Phi(z) - Phi(lo)) / (Phi(hi) - Phi(lo)) in log space, on the side of the mean where the interval
    mostly lies (one above it is reflected, F(x) = 1 - F'(-x)): differences of CDF values near 1 lost
    every digit in the upper tail (issue 15), and Phi itself underflows 38 std below the mean."""
    lo, hi = (dist.low - dist.loc) / dist.scale, (dist.high - dist.loc) / dist.scale
    z = ((x - dist.loc) / dist.scale).clamp(lo, hi)
    upper = lo + hi > 0
    if upper:
        z, lo, hi = -z, -hi, -lo
    log_lo, log_hi = (torch.special.log_ndtr(torch.tensor(v, dtype=torch.float64)).item() for v in (lo, hi))
    log_z = torch.special.log_ndtr(z)
    # z at a bound 38+ std out has log Phi = -inf on both sides of the gap: nothing lies below it.
    gap = (log_lo - log_z).nan_to_num(nan=0.0)
    below = torch.exp(log_z - log_hi) * -torch.expm1(gap) / -math.expm1(log_lo - log_hi)
    truncated: torch.Tensor = 1 - below if upper else below
    return truncated


def _support(dist: d.Uniform | d.TruncatedNormal) -> tuple[float, float]:
    return dist.low, dist.high


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) if math.isfinite(x) else 0.0


def _normal_mass(a: float, b: float) -> float:
    """Phi(b) - Phi(a), from erfc on the side away from the mean, so a far tail keeps its digits."""
    if a >= 0:
        return 0.5 * (math.erfc(a / math.sqrt(2)) - math.erfc(b / math.sqrt(2)))
    if b <= 0:
        return 0.5 * (math.erfc(-b / math.sqrt(2)) - math.erfc(-a / math.sqrt(2)))
    return 0.5 * (math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2)))


def _truncated_kurtosis(dist: d.TruncatedNormal) -> float:
    """m4 / sigma^4 of N(loc, scale^2) on [low, high]: the standard law's moments M_k about its mean c,
    by parts, M_k = -c M_{k-1} + (k - 1) M_{k-2} + ((a - c)^(k-1) phi(a) - (b - c)^(k-1) phi(b)) / Z.
    Where the interval is so far out that Z underflows (or cancellation spoils the moments), the
    exponential law's 9, which a one-sided tail approaches from below as it moves out (checked
    against scipy.stats.truncnorm; a larger kurtosis only widens the test)."""
    a, b = (dist.low - dist.loc) / dist.scale, (dist.high - dist.loc) / dist.scale
    z = _normal_mass(a, b)
    if not z > 0:
        return 9.0
    pa, pb = _phi(a) / z, _phi(b) / z  # 0 at an infinite bound
    c = pa - pb
    moments = [1.0, 0.0]
    for k in (2, 3, 4):
        edge = (pa * (a - c) ** (k - 1) if pa else 0.0) - (pb * (b - c) ** (k - 1) if pb else 0.0)
        moments.append(-c * moments[k - 1] + (k - 1) * moments[k - 2] + edge)
    kurtosis = moments[4] / moments[2] ** 2 if moments[2] > 0 else math.nan
    return min(max(kurtosis, 1.0), 9.0) if math.isfinite(kurtosis) else 9.0


def _eye_kurtosis(dist: d.Eye) -> float:
    """An entry gain * B + N(0, noise^2) with B ~ Bernoulli(p), p the diagonal's share of the entries."""
    p = dist.mean / dist.gain if dist.gain else 0.0
    g2, e2 = dist.gain**2, dist.noise**2
    m4 = g2 * g2 * p * (1 - p) * (1 - 3 * p + 3 * p * p) + 6 * g2 * e2 * p * (1 - p) + 3 * e2 * e2
    return m4 / dist.std**4


def _sparse_kurtosis(dist: d.Sparse) -> float:
    # N(0, scale^2) at a share q of the entries, 0 elsewhere: m4 = 3 q scale^4, sigma^2 = q scale^2.
    return 3.0 / (1.0 - dist.zeros / dist.rows)


def _fixed(kurtosis: float) -> Callable[[Any], float]:
    return lambda dist: kurtosis


LAW_CHECKS.register("constant")(LawCheck(exact_rms=_always, scaled=("value",)))
LAW_CHECKS.register("uniform")(
    LawCheck(cdf=_uniform_cdf, bounds=_support, kurtosis=_fixed(9 / 5), scaled=("low", "high"))
)
LAW_CHECKS.register("normal")(LawCheck(cdf=_normal_cdf, kurtosis=_fixed(3.0), scaled=("loc", "scale")))
LAW_CHECKS.register("truncated_normal")(
    LawCheck(cdf=_truncated_cdf, bounds=_support, kurtosis=_truncated_kurtosis, scaled=("loc", "scale", "low", "high"))
)
LAW_CHECKS.register("orthogonal")(LawCheck(exact_rms=_always, gram_gain=lambda dist: dist.gain, scaled=("gain",)))
LAW_CHECKS.register("eye")(
    LawCheck(exact_rms=lambda dist: dist.noise == 0, kurtosis=_eye_kurtosis, scaled=("gain", "noise"))
)
LAW_CHECKS.register("dirac")(LawCheck(exact_rms=_always))  # 0 and 1 only: no gain to scale
LAW_CHECKS.register("delta_orthogonal")(LawCheck(exact_rms=_always, scaled=("gain",)))
LAW_CHECKS.register("sparse")(LawCheck(kurtosis=_sparse_kurtosis, scaled=("scale",)))
LAW_CHECKS.register("looks_linear")(LawCheck(exact_rms=_always, scaled=("gain",)))


def rescaled(dist: d.Distribution, factor: float) -> d.Distribution | None:
    """The law of `factor` (> 0) times a draw of `dist`: LSUV's rescaled weights, whose expected
    moments include the factor (issue 15). None where the family cannot state it (dirac)."""
    if factor == 1.0:
        return dist
    fields = LAW_CHECKS.get(dist.family).scaled
    if fields is None:
        return None
    return dataclasses.replace(dist, **{name: getattr(dist, name) * factor for name in fields})


def cdf(dist: d.Distribution, x: torch.Tensor) -> torch.Tensor | None:
    """The law's CDF at `x` (float64), or None where the report runs no KS test for its family."""
    law_cdf = LAW_CHECKS.get(dist.family).cdf
    return None if law_cdf is None else law_cdf(dist, x)


def fit(values: torch.Tensor, dist: d.Distribution | None, dtype: str) -> FitCheck | None:
    """KS of a strided sample against `dist` (elementwise random laws only), bounds and unique counts."""
    if dist is None or not dist.elementwise or dist.std == 0:
        return None
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.numel() // KS_SAMPLE)][:KS_SAMPLE].to(torch.float64)
    unique = int(torch.unique(sample).numel()) if DTYPES.get(dtype).low_precision else None
    expected = cdf(dist, torch.sort(sample).values)
    if expected is None or sample.numel() == 0:
        return FitCheck(ks_statistic=None, ks_pvalue=None, sample_size=int(sample.numel()), unique_values=unique)
    n = sample.numel()
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=sample.device)
    d_stat = float(torch.maximum(ranks / n - expected, expected - (ranks - 1) / n).max())
    return FitCheck(
        ks_statistic=d_stat, ks_pvalue=kolmogorov_pvalue(d_stat, n), sample_size=n,
        at_bounds=_at_bounds(flat, dist), unique_values=unique,
    )  # fmt: skip


def _at_bounds(flat: torch.Tensor, dist: d.Distribution) -> int | None:
    support = LAW_CHECKS.get(dist.family).bounds
    if support is None:
        return None
    bounds = torch.tensor(support(dist), dtype=torch.float64).to(flat.dtype).to(flat.device)
    return int(((flat == bounds[0]) | (flat == bounds[1])).sum())


def flags(m: Measured, dist: d.Distribution | None, dtype: str, tests: int = 1) -> list[str]:
    """Where a tensor's values are not finite, or its mean or std differ from `dist`'s beyond
    sampling error at the job's level: `tests` tensors share JOB_ALPHA ([Note: calibrated flags]).
    Rounding to a low-precision dtype widens each test by twice its relative gap (ROUNDING)."""
    out = _not_finite(m, dtype)
    n = m.n_finite
    if dist is None or m.mean is None or m.std is None or n < 2:
        return out
    if not MEASURABLE_SCALE[0] < max(abs(dist.mean), dist.std) < MEASURABLE_SCALE[1]:
        return out  # the float64 sums of squares under- or overflow: the moments measured are not the values'
    level = JOB_ALPHA / (2 * max(tests, 1))
    allowance = (2 * ROUNDING.get(dtype, 0.0) + 1e-12) * max(abs(dist.mean), dist.std) + 2 * SUBNORMAL.get(dtype, 0.0)
    check = LAW_CHECKS.get(dist.family)
    tested = [("mean", m.mean, dist.mean, _normal_pvalue(abs(m.mean - dist.mean) - allowance, dist.std / math.sqrt(n)))]
    if dist.std > 0 and not check.exact_rms(dist) and check.kurtosis is not None:
        tested.append(("std", m.std, dist.std, _variance_pvalue(m.std, dist.std, n, check.kurtosis(dist), allowance)))
    where = f"over {n:,} values, below {level:.2g}: {JOB_ALPHA:g} shared by {2 * max(tests, 1)} tests"
    out += [
        f"{what} {seen:.6g} differs from the expected {expected:.6g} beyond sampling error (p = {p:.2g} {where})"
        for what, seen, expected, p in tested
        if p < level
    ]
    # An exact-RMS law's std about the sample mean is below its RMS by at most the mean itself.
    if dist.std > 0 and check.exact_rms(dist) and abs(m.std - dist.std) > abs(m.mean) + 1e-6 * dist.std + allowance:
        out.append(f"std {m.std:.6g} differs from the expected {dist.std:.6g}, which this law fixes exactly")
    return out


def _not_finite(m: Measured, dtype: str) -> list[str]:
    total = m.n_finite + m.nan_count + m.inf_count
    out = []
    if m.inf_count:
        largest = torch.finfo(getattr(torch, DTYPES.get(dtype).torch)).max if DTYPES.get(dtype).floating else None
        reach = "" if largest is None else f" (beyond +-{largest:.6g})"
        out.append(f"{m.inf_count:,} of {total:,} values are infinite: the draw overflowed {dtype}{reach}")
    if m.nan_count:
        out.append(f"{m.nan_count:,} of {total:,} values are NaN: not finite")
    return out


def _normal_pvalue(excess: float, sd: float) -> float:
    """Two-sided p-value of a normal statistic `excess` (>= 0 beyond its allowance) from its mean."""
    if excess <= 0:
        return 1.0
    return math.erfc(excess / (sd * math.sqrt(2))) if sd > 0 else 0.0


def _variance_pvalue(std: float, expected: float, n: int, kurtosis: float, allowance: float) -> float:
    """Two-sided p-value of a sample std (divisor n) of n draws of a law with std `expected` and this
    kurtosis: s^2 as c chi2(nu), the wider of chi2(n - 1) and the moment-matched chi2 ([Note: calibrated
    flags]); `std` is first moved toward `expected` by `allowance`."""
    if abs(std - expected) <= allowance:
        return 1.0
    # In units of the expected std: the test is scale-free, and a law of std 1e-300 no longer
    # underflows its variance to 0 (a ZeroDivisionError failed the job, issue 15).
    ratio = (std - math.copysign(allowance, std - expected)) / expected
    mean = (n - 1) / n  # E[s^2] / sigma^2
    spread = (n - 1) * ((n - 1) * kurtosis - (n - 3)) / n**3  # Var[s^2] / sigma^4, exact for iid draws
    nu = min(n - 1.0, 2 * mean**2 / spread) if spread > 0 else n - 1.0
    half = torch.tensor(nu / 2, dtype=torch.float64)
    x = torch.tensor(ratio * ratio * nu / mean / 2, dtype=torch.float64)
    lower, upper = float(torch.special.gammainc(half, x)), float(torch.special.gammaincc(half, x))
    return min(1.0, 2 * min(lower, upper))
