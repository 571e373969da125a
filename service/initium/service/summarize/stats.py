"""Summarize: what a generated tensor actually holds, measured in float64 on its device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from initium.schemas.report import PowerSums

try:
    import numba
except ImportError:  # the torch pass below always works
    numba = None  # type: ignore[assignment]


NO_VALUES = PowerSums(n=0, s1=0.0, s2=0.0, s3=0.0, s4=0.0)


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
    power_sums: PowerSums = NO_VALUES
    central_m4: float | None = None  # mean of (x - mean)^4, for the std's sampling error
    sum_of_squares: float = 0.0  # the squared Frobenius norm


CHUNK = 1 << 22
BLOCK = 1 << 16  # the CPU pass's unit of work; CHUNK is a multiple, so blocks never straddle chunks
# Accumulator layout of one block: sums of (x - shift)^k for k = 1..4, then min, max, zeros, NaNs, Infs.
_FIELDS = 9
# Sums about a shift s lose about log10((mean - s)^2 / variance) of float64's 16 digits to
# cancellation; beyond 4 (the shift more than 100 standard deviations from the mean) a second pass
# sums about the mean instead.
RECENTRE = 1e4


class _Tally(NamedTuple):
    """One pass's accumulators: the shifted power sums over finite values, extremes and counts."""

    sums: PowerSums
    low: float
    high: float
    zeros: int
    nans: int
    infs: int


def measure(tensor: torch.Tensor) -> Measured:
    """Moments and extremes over the finite values; NaN and Inf are counted, not averaged.

    One pass accumulates, in float64, the sums of (x - shift)^k with the first finite value as the
    shift: a constant tensor's deviations are all exactly 0 (std exactly 0, mean exactly its value),
    and a near-constant one keeps its digits, where raw power sums E[x^2] - E[x]^2 lose them (issue
    15). Where the first value lies far out (more than 100 standard deviations from the mean), a
    second pass re-centres on the mean. Mean, std and the central fourth moment follow from the sums
    (PowerSums); the sums of parts combine with PowerSums.merge. On the CPU a compiled kernel makes
    the pass (torch needs about ten over memory: a float64 copy, isfinite, the powers, each sum,
    aminmax).
    """
    flat = tensor.detach().reshape(-1)
    accumulate = _accumulate_cpu if flat.device.type == "cpu" and numba is not None else _accumulate_torch
    tally = accumulate(flat, _first_finite(flat))
    if _cancels(tally.sums):
        tally = accumulate(flat, tally.sums.shift + tally.sums.s1 / tally.sums.n)
    return _measured(flat.numel(), tally)


def warm_up() -> None:
    """Compile (or load from numba's cache) the CPU pass for both input dtypes before the first job."""
    for dtype in (torch.float32, torch.float64):
        measure(torch.ones(3, dtype=dtype))


def _first_finite(flat: torch.Tensor) -> float:
    """The shift: the first finite value (exactly, as a float64), or 0 when there is none."""
    if flat.numel() and math.isfinite(first := float(flat[0])):
        return first
    for chunk in torch.split(flat, CHUNK):
        finite = torch.isfinite(chunk).nonzero()
        if finite.numel():
            return float(chunk[finite[0, 0]])
    return 0.0


def _cancels(sums: PowerSums) -> bool:
    if not sums.n:
        return False
    offset = sums.s1 / sums.n
    return offset * offset > RECENTRE * (sums.s2 / sums.n - offset * offset)


def _accumulate_cpu(flat: torch.Tensor, shift: float) -> _Tally:
    """Per-block accumulators (in parallel), added in block order: the same figures whatever the
    thread count. float16 and bfloat16 widen to float32 a chunk at a time (exactly)."""
    n = flat.numel()
    blocks = np.empty(((n + BLOCK - 1) // BLOCK, _FIELDS), dtype=np.float64)
    for first in range(0, n, CHUNK):
        chunk = flat[first : first + CHUNK]
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.to(torch.float32)
        end = (first + chunk.numel() + BLOCK - 1) // BLOCK
        _block_accumulate(chunk.numpy(), shift, blocks[first // BLOCK : end])
    nans, infs = int(blocks[:, 7].sum()), int(blocks[:, 8].sum())
    s1, s2, s3, s4 = (math.fsum(blocks[:, k]) for k in range(4))
    return _Tally(
        PowerSums(n=n - nans - infs, s1=s1, s2=s2, s3=s3, s4=s4, shift=shift),
        float(blocks[:, 4].min(initial=math.inf)), float(blocks[:, 5].max(initial=-math.inf)),
        int(blocks[:, 6].sum()), nans, infs,
    )  # fmt: skip


if numba is not None:

    @numba.njit(parallel=True, cache=True)
    def _block_accumulate(x: np.ndarray, shift: float, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in numba.prange(out.shape[0]):
            s1 = s2 = s3 = s4 = 0.0
            low, high = math.inf, -math.inf
            zeros = nans = infs = 0
            for i in range(b * BLOCK, min((b + 1) * BLOCK, x.shape[0])):
                v = np.float64(x[i])
                if math.isnan(v):
                    nans += 1
                elif math.isinf(v):
                    infs += 1
                else:
                    e = v - shift
                    e2 = e * e
                    s1 += e
                    s2 += e2
                    s3 += e2 * e
                    s4 += e2 * e2
                    low = min(low, v)
                    high = max(high, v)
                    zeros += v == 0.0
            out[b, 0], out[b, 1], out[b, 2], out[b, 3] = s1, s2, s3, s4
            out[b, 4], out[b, 5], out[b, 6], out[b, 7], out[b, 8] = low, high, zeros, nans, infs


def _accumulate_torch(flat: torch.Tensor, shift: float) -> _Tally:
    """The same figures with torch ops in float64 chunks: the path for CUDA tensors."""
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
        lo, hi = torch.aminmax(x)
        low, high = min(low, float(lo)), max(high, float(hi))
        e = x - shift
        e2 = e * e
        sums += torch.stack([e.sum(), e2.sum(), (e2 * e).sum(), (e2 * e2).sum()])
    s1, s2, s3, s4 = sums.tolist()
    return _Tally(PowerSums(n=n - nans - infs, s1=s1, s2=s2, s3=s3, s4=s4, shift=shift), low, high, zeros, nans, infs)


def _measured(n: int, tally: _Tally) -> Measured:
    sums = tally.sums
    zero_fraction = tally.zeros / n if n else 0.0
    mean, var, m4 = sums.mean, sums.central_moment(2), sums.central_moment(4)
    if mean is None or var is None:
        return Measured(None, None, None, None, None, zero_fraction, tally.nans, tally.infs, power_sums=sums)
    # Values near float64's limit square to inf (inf - inf is NaN): such a std is not measurable in
    # float64 sums, so it is missing rather than a NaN next to all-finite values (issue 15).
    # Distinct values with a variance of exactly 0: their deviations' squares underflowed (|x - mean|
    # < 1e-162), so the std is not measurable either (a constant tensor, low == high, is exactly 0).
    measurable = math.isfinite(var) and (var > 0 or tally.low == tally.high)
    std = math.sqrt(var) if measurable else None
    return Measured(
        mean=mean, std=std, min=tally.low, max=tally.high, abs_max=max(abs(tally.low), abs(tally.high)),
        zero_fraction=zero_fraction, nan_count=tally.nans, inf_count=tally.infs, n_finite=sums.n,
        power_sums=sums, central_m4=m4, sum_of_squares=sums.shifted(0.0).s2,
    )  # fmt: skip
