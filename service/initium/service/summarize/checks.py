"""Checks for the report: each tensor against its own law (KS) and disagreement flags.

Everything runs on the tensor's device on bounded work: KS on a strided sample of at most KS_SAMPLE
values in float64. What each law family allows (a KS test against its CDF, values at its bounds, an
exact RMS, orthogonality) is its entry in LAW_CHECKS; the spectrum is summarize.spectral's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from initium.schemas.dtypes import DTYPES
from initium.schemas.report import FitCheck
from initium.service.plan import distributions as d
from initium.service.registry import Registry

KS_SAMPLE = 20_000
# The smallest gaps a low-precision dtype leaves between neighbouring values, relative: rounding
# alone moves a std by about this much, which sampling-error flags must not mistake for a bug.
ROUNDING = {
    name: 2.0**-info.mantissa_bits
    for name, info in ((n, DTYPES.get(n)) for n in DTYPES.names())
    if info.mantissa_bits is not None
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
    """

    cdf: Callable[[Any, torch.Tensor], torch.Tensor | None] | None = None
    bounds: Callable[[Any], tuple[float, float]] | None = None
    exact_rms: Callable[[Any], bool] = _never
    gram_gain: Callable[[Any], float] | None = None


LAW_CHECKS: Registry[LawCheck] = Registry("law check")


def _uniform_cdf(dist: d.Uniform, x: torch.Tensor) -> torch.Tensor:
    return ((x - dist.low) / (dist.high - dist.low)).clamp(0, 1)


def _normal_cdf(dist: d.Normal, x: torch.Tensor) -> torch.Tensor | None:
    if dist.scale <= 0:
        return None
    normal: torch.Tensor = torch.special.ndtr((x - dist.loc) / dist.scale)
    return normal


def _truncated_cdf(dist: d.TruncatedNormal, x: torch.Tensor) -> torch.Tensor:
    lo, hi = (dist.low - dist.loc) / dist.scale, (dist.high - dist.loc) / dist.scale
    z = torch.special.ndtr(((x - dist.loc) / dist.scale).clamp(lo, hi))
    low, high = (torch.special.ndtr(torch.tensor(v, dtype=torch.float64)).item() for v in (lo, hi))
    truncated: torch.Tensor = (z - low) / (high - low)
    return truncated


def _support(dist: d.Uniform | d.TruncatedNormal) -> tuple[float, float]:
    return dist.low, dist.high


LAW_CHECKS.register("constant")(LawCheck(exact_rms=_always))
LAW_CHECKS.register("uniform")(LawCheck(cdf=_uniform_cdf, bounds=_support))
LAW_CHECKS.register("normal")(LawCheck(cdf=_normal_cdf))
LAW_CHECKS.register("truncated_normal")(LawCheck(cdf=_truncated_cdf, bounds=_support))
LAW_CHECKS.register("orthogonal")(LawCheck(exact_rms=_always, gram_gain=lambda dist: dist.gain))
LAW_CHECKS.register("eye")(LawCheck(exact_rms=lambda dist: dist.noise == 0))
LAW_CHECKS.register("dirac")(LawCheck(exact_rms=_always))
LAW_CHECKS.register("delta_orthogonal")(LawCheck(exact_rms=_always))
LAW_CHECKS.register("sparse")(LawCheck())
LAW_CHECKS.register("looks_linear")(LawCheck(exact_rms=_always))


def kolmogorov_pvalue(d_stat: float, n: int) -> float:
    """P(D >= d_stat) for n draws of the hypothesized law: Stephens' (1970) asymptotic form, within
    about 0.02 of the exact distribution for n >= 50 and far closer at the report's sample sizes."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d_stat
    if lam < 0.2:
        return 1.0
    total = math.fsum((-1.0) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, 2.0 * total))


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


def _exact_rms(dist: d.Distribution) -> bool:
    return LAW_CHECKS.get(dist.family).exact_rms(dist)


def flags(n: int, mean: float | None, std: float | None, m4: float | None, dist: d.Distribution | None,
          dtype: str) -> list[str]:  # fmt: skip
    """Where measured and expected moments differ by more than 6 standard errors (plus rounding)."""
    if dist is None or mean is None or std is None or n < 2:
        return []
    rounding = ROUNDING.get(dtype, 0.0) * max(abs(dist.mean), dist.std, 1e-30)
    out = []
    if abs(mean - dist.mean) > 6 * dist.std / math.sqrt(n) + 2 * rounding + 1e-12:
        out.append(f"mean {mean:.6g} differs from the expected {dist.mean:.6g} beyond sampling error")
    if dist.std > 0:
        if _exact_rms(dist):
            # These laws fix the entries' RMS exactly; the std about the sample mean is below it by at
            # most the mean itself.
            tolerance = abs(mean) + 1e-6 * dist.std
        else:
            # Var(s^2) ~ (m4 - s^4) / n: the std's standard error is about sqrt(m4 - s^4) / (2 s sqrt(n)).
            tolerance = 6 * math.sqrt(max((m4 or 0.0) - dist.std**4, 0.0) / n) / (2 * dist.std)
        if abs(std - dist.std) > tolerance + 2 * rounding + 1e-12:
            out.append(f"std {std:.6g} differs from the expected {dist.std:.6g} beyond sampling error")
    return out
