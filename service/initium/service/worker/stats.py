"""Summarize: what a generated tensor actually holds, measured in float64 on its device."""

from __future__ import annotations

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


def measure(tensor: torch.Tensor) -> Measured:
    """Moments and extremes over the finite values; NaN and Inf are counted, not averaged."""
    x = tensor.detach().reshape(-1).to(torch.float64)
    n = x.numel()
    nan_count = int(torch.isnan(x).sum())
    inf_count = int(torch.isinf(x).sum())
    zero_fraction = float((x == 0).sum()) / n if n else 0.0
    finite = x if nan_count + inf_count == 0 else x[torch.isfinite(x)]
    if finite.numel() == 0:
        return Measured(None, None, None, None, None, zero_fraction, nan_count, inf_count)
    mean = finite.mean()
    x2 = finite * finite
    centered2 = (finite - mean) ** 2
    sums = (float(finite.sum()), float(x2.sum()), float((x2 * finite).sum()), float((x2 * x2).sum()))
    return Measured(
        mean=float(mean),
        std=float(centered2.mean().sqrt()),
        min=float(finite.min()),
        max=float(finite.max()),
        abs_max=float(finite.abs().max()),
        zero_fraction=zero_fraction,
        nan_count=nan_count,
        inf_count=inf_count,
        n_finite=finite.numel(),
        power_sums=sums,
        central_m4=float((centered2 * centered2).mean()),
    )
