"""The laws schemes resolve to; each knows its exact moments, and the sampler draws from the same object.

Pure Python (no torch), so the API process can put expected moments into a plan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from initium.schemas import plan as wire

Family = Literal[
    "constant", "uniform", "normal", "truncated_normal", "orthogonal",
    "eye", "dirac", "delta_orthogonal", "sparse", "looks_linear",
]  # fmt: skip


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


class _Centered:
    """A law symmetric about 0 (every orthogonal-based and sparse law here)."""

    @property
    def mean(self) -> float:
        return 0.0


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
class Orthogonal(_Centered):
    """gain * Q, Q Haar-random with orthonormal rows (wide) or columns (tall) of the [rows, cols] view."""

    gain: float
    rows: int
    cols: int
    family: Family = "orthogonal"
    elementwise: bool = False

    @property
    def std(self) -> float:
        # The squared entries sum to gain^2 * min(rows, cols) exactly, over rows * cols entries.
        return self.gain / math.sqrt(max(self.rows, self.cols))


def _pattern_std(mean_square: float, mean: float) -> float:
    return math.sqrt(max(0.0, mean_square - mean * mean))


@dataclass(frozen=True)
class Eye:
    """gain on the diagonal of the [rows, cols] matrix (every [cols, cols] block of it when `tile`),
    plus N(0, noise^2) on every entry."""

    gain: float
    rows: int
    cols: int
    tile: bool
    noise: float
    family: Family = "eye"
    elementwise: bool = True

    def _ones(self) -> int:
        return self.rows if self.tile else min(self.rows, self.cols)

    @property
    def mean(self) -> float:
        return self.gain * self._ones() / (self.rows * self.cols)

    @property
    def std(self) -> float:
        n = self.rows * self.cols
        return _pattern_std(self.gain**2 * self._ones() / n + self.noise**2, self.mean)


@dataclass(frozen=True)
class Dirac:
    """1 at [g * out_per_group + c, c, centre] for c < min(out_per_group, in_per_group), 0 elsewhere."""

    out_channels: int
    in_per_group: int
    groups: int
    kernel: int  # the product of the kernel sizes
    centre: int  # flat index of the centre tap within the kernel (torch: size // 2 per dimension)
    family: Family = "dirac"
    elementwise: bool = False

    def _ones(self) -> int:
        return self.groups * min(self.out_channels // self.groups, self.in_per_group)

    @property
    def mean(self) -> float:
        return self._ones() / (self.out_channels * self.in_per_group * self.kernel)

    @property
    def std(self) -> float:
        return _pattern_std(self.mean, self.mean)


@dataclass(frozen=True)
class DeltaOrthogonal(_Centered):
    """gain * H at the centre tap, H an [out, in] matrix with orthonormal columns; 0 elsewhere."""

    gain: float
    out_channels: int
    in_channels: int
    kernel: int
    centre: int  # flat index within the kernel (Xiao et al. and JAX: (size - 1) // 2 per dimension)
    family: Family = "delta_orthogonal"
    elementwise: bool = False

    @property
    def std(self) -> float:
        return self.gain * math.sqrt(self.in_channels / (self.out_channels * self.in_channels * self.kernel))


@dataclass(frozen=True)
class Sparse(_Centered):
    """N(0, scale^2) with exactly `zeros` zeros per column of the [rows, cols] matrix."""

    scale: float
    rows: int
    cols: int
    zeros: int
    family: Family = "sparse"
    elementwise: bool = False

    @property
    def std(self) -> float:
        return self.scale * math.sqrt(1 - self.zeros / self.rows)


@dataclass(frozen=True)
class LooksLinear(_Centered):
    """[W0, -W0] along dimension 1; W0 is gain * a Haar orthogonal [rows, half_cols] matrix view."""

    gain: float
    rows: int
    half_cols: int  # columns of W0's flattened [rows, prod(shape[1:]) / 2] view
    family: Family = "looks_linear"
    elementwise: bool = False

    @property
    def std(self) -> float:
        return self.gain / math.sqrt(max(self.rows, self.half_cols))


Distribution = (
    Constant | Uniform | Normal | TruncatedNormal | Orthogonal | Eye | Dirac | DeltaOrthogonal | Sparse | LooksLinear
)
FAMILIES: dict[str, type[Distribution]] = {
    cls.family: cls
    for cls in (
        Constant,
        Uniform,
        Normal,
        TruncatedNormal,
        Orthogonal,
        Eye,
        Dirac,
        DeltaOrthogonal,
        Sparse,
        LooksLinear,
    )
}


def distribution_params(dist: Distribution) -> dict[str, float]:
    """The law's parameters without its bookkeeping fields, for the plan on the wire."""
    params = asdict(dist)
    return {k: float(v) for k, v in params.items() if k not in ("family", "elementwise")}


def from_params(family: str, params: dict[str, float]) -> Distribution:
    """Rebuild a law from its wire form (the worker's side of the plan)."""
    cls = FAMILIES[family]
    kinds = {f.name: f.type for f in fields(cls)}
    casts = {"int": int, "bool": bool, "float": float}
    return cls(**{k: casts[str(kinds[k])](v) for k, v in params.items()})


def planned_distribution(planned: wire.PlannedTensor | wire.PlannedPart) -> Distribution:
    """Rebuild the sampler's distribution from a planned tensor or part (the worker's side of the plan)."""
    if planned.distribution is None:
        raise ValueError("a block without a rule cannot be generated")
    return from_params(planned.distribution.family, planned.distribution.params)
