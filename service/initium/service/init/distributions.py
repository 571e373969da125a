"""The laws schemes resolve to; each knows its exact moments, and the sampler draws from the same object.

Pure Python (no torch), so the API process can put expected moments into a plan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

Family = Literal["constant", "uniform", "normal", "truncated_normal", "orthogonal"]


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


@dataclass(frozen=True)
class Constant:
    value: float
    family: Family = "constant"
    elementwise: bool = True

    @property
    def mean(self) -> float:
        return self.value

    @property
    def std(self) -> float:
        return 0.0


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    family: Family = "uniform"
    elementwise: bool = True

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def std(self) -> float:
        return (self.high - self.low) / math.sqrt(12)


@dataclass(frozen=True)
class Normal:
    loc: float
    scale: float
    family: Family = "normal"
    elementwise: bool = True

    @property
    def mean(self) -> float:
        return self.loc

    @property
    def std(self) -> float:
        return self.scale


@dataclass(frozen=True)
class TruncatedNormal:
    """N(loc, scale^2) conditioned on [low, high] (absolute bounds)."""

    loc: float
    scale: float
    low: float
    high: float
    family: Family = "truncated_normal"
    elementwise: bool = True

    def _standard(self) -> tuple[float, float, float]:
        alpha = (self.low - self.loc) / self.scale
        beta = (self.high - self.loc) / self.scale
        return alpha, beta, _cdf(beta) - _cdf(alpha)

    @property
    def mean(self) -> float:
        alpha, beta, z = self._standard()
        return self.loc + self.scale * (_phi(alpha) - _phi(beta)) / z

    @property
    def std(self) -> float:
        # Johnson, Kotz and Balakrishnan (1994), eq. 13.134: the variance of a doubly truncated normal.
        alpha, beta, z = self._standard()
        a_term = alpha * _phi(alpha) if math.isfinite(alpha) else 0.0
        b_term = beta * _phi(beta) if math.isfinite(beta) else 0.0
        shift = (_phi(alpha) - _phi(beta)) / z
        return self.scale * math.sqrt(max(0.0, 1 + (a_term - b_term) / z - shift**2))


@dataclass(frozen=True)
class Orthogonal:
    """gain * Q, Q Haar-random with orthonormal rows (wide) or columns (tall) of the [rows, cols] view."""

    gain: float
    rows: int
    cols: int
    family: Family = "orthogonal"
    elementwise: bool = False

    @property
    def mean(self) -> float:
        return 0.0

    @property
    def std(self) -> float:
        # The squared entries sum to gain^2 * min(rows, cols) exactly, over rows * cols entries.
        return self.gain / math.sqrt(max(self.rows, self.cols))


Distribution = Constant | Uniform | Normal | TruncatedNormal | Orthogonal


def distribution_params(dist: Distribution) -> dict[str, float]:
    """The law's parameters without its bookkeeping fields, for the plan on the wire."""
    params = asdict(dist)
    return {k: float(v) for k, v in params.items() if k not in ("family", "elementwise")}
