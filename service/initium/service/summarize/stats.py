"""Summarize: what a generated tensor actually holds, measured in float64 on its device."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

try:
    import numba
except ImportError:  # the torch pass below always works
    numba = None  # type: ignore[assignment]


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
BLOCK = 1 << 16  # the CPU pass's unit of work; CHUNK is a multiple, so blocks never straddle chunks
# Accumulator layout of one block: sums of x, x^2, x^3, x^4, then min, max, zeros, NaNs, Infs.
_FIELDS = 9


def measure(tensor: torch.Tensor) -> Measured:
    """Moments and extremes over the finite values; NaN and Inf are counted, not averaged.

    One pass accumulates the power sums in float64; mean, std and the central fourth moment follow
    from them (the cancellation this risks is negligible for init tensors, whose means are small next
    to their spread or exactly constant). On the CPU a compiled kernel makes that one pass (torch
    needs about ten over memory: a float64 copy, isfinite, the powers, each sum, aminmax).
    """
    flat = tensor.detach().reshape(-1)
    if flat.device.type == "cpu" and numba is not None and flat.numel() > 0:
        return _measure_cpu(flat)
    return _measure_torch(flat)


def warm_up() -> None:
    """Compile (or load from numba's cache) the CPU pass for both input dtypes before the first job."""
    for dtype in (torch.float32, torch.float64):
        measure(torch.ones(3, dtype=dtype))


def _measure_cpu(flat: torch.Tensor) -> Measured:
    """Per-block accumulators (in parallel), added in block order: the same figures whatever the
    thread count. float16 and bfloat16 widen to float32 a chunk at a time (exactly)."""
    n = flat.numel()
    blocks = np.empty(((n + BLOCK - 1) // BLOCK, _FIELDS), dtype=np.float64)
    for first in range(0, n, CHUNK):
        chunk = flat[first : first + CHUNK]
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.to(torch.float32)
        _block_accumulate(chunk.numpy(), blocks[first // BLOCK : (first + chunk.numel() + BLOCK - 1) // BLOCK])
    s1, s2, s3, s4 = (math.fsum(blocks[:, k]) for k in range(4))
    low, high = float(blocks[:, 4].min()), float(blocks[:, 5].max())
    zeros, nans, infs = (int(blocks[:, k].sum()) for k in (6, 7, 8))
    return _moments(n, n - nans - infs, (s1, s2, s3, s4), low, high, zeros, nans, infs)


if numba is not None:

    @numba.njit(parallel=True, cache=True)
    def _block_accumulate(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
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
                    v2 = v * v
                    s1 += v
                    s2 += v2
                    s3 += v2 * v
                    s4 += v2 * v2
                    low = min(low, v)
                    high = max(high, v)
                    zeros += v == 0.0
            out[b, 0], out[b, 1], out[b, 2], out[b, 3] = s1, s2, s3, s4
            out[b, 4], out[b, 5], out[b, 6], out[b, 7], out[b, 8] = low, high, zeros, nans, infs


def _measure_torch(flat: torch.Tensor) -> Measured:
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
