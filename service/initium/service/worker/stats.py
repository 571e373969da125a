"""Summarize: what a generated tensor actually holds, measured in float64 on its device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Measured:
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    abs_max: float | None
    zero_fraction: float
    nan_count: int
    inf_count: int
    n_finite: int = 0
    power_sums: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # sums of x, x^2, x^3, x^4
    central_m4: float | None = None  # mean of (x - mean)^4, for the std's sampling error


CHUNK = 1 << 22


def measure(tensor: torch.Tensor) -> Measured:
    """Moments and extremes over the finite values; NaN and Inf are counted, not averaged.

    One pass in float64 chunks accumulates the power sums; mean, std and the central fourth
    moment follow from them (the cancellation this risks is negligible for init tensors, whose
    means are small next to their spread or exactly constant).
    """
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    sums = torch.zeros(4, dtype=torch.float64, device=flat.device)
    low, high, zeros, nans, infs = math.inf, -math.inf, 0, 0, 0
    for chunk in torch.split(flat, CHUNK):
        x = chunk.to(torch.float64)
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            nans += int(torch.isnan(x).sum())
            infs += int(torch.isinf(x).sum())
            x = x[finite]
        if x.numel() == 0:
            continue
        zeros += int((x == 0).sum())
        x2 = x * x
        sums += torch.stack([x.sum(), x2.sum(), (x2 * x).sum(), (x2 * x2).sum()])
        lo, hi = torch.aminmax(x)
        low, high = min(low, float(lo)), max(high, float(hi))
    s1, s2, s3, s4 = sums.tolist()
    return _moments(n, n - nans - infs, (s1, s2, s3, s4), low, high, zeros, nans, infs)


def _moments(
    n: int, m: int, sums: tuple[float, float, float, float], low: float, high: float, zeros: int, nans: int, infs: int
) -> Measured:
    zero_fraction = zeros / n if n else 0.0
    if m == 0:
        return Measured(None, None, None, None, None, zero_fraction, nans, infs)
    mean = sums[0] / m
    var = max(sums[1] / m - mean * mean, 0.0)
    e2, e3, e4 = sums[1] / m, sums[2] / m, sums[3] / m
    m4 = max(e4 - 4 * mean * e3 + 6 * mean * mean * e2 - 3 * mean**4, 0.0)
    return Measured(
        mean=mean, std=math.sqrt(var), min=low, max=high, abs_max=max(abs(low), abs(high)),
        zero_fraction=zero_fraction, nan_count=nans, inf_count=infs, n_finite=m, power_sums=sums, central_m4=m4,
    )  # fmt: skip
