"""The laws schemes resolve to; each knows its exact moments, and the sampler draws from the same object.

Pure Python (no torch), so the API process can put expected moments into a plan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from initium.schemas import plan as wire
from initium.service.plan.truncated import truncated_moments

Family = Literal[
    "constant", "uniform", "normal", "truncated_normal", "orthogonal",
    "eye", "dirac", "delta_orthogonal", "sparse", "looks_linear",
]  # fmt: skip


# How far an unbounded law's values are taken to reach: a draw beyond 6 std has probability 2e-9.
REACH_STDS = 6.0

Extent = tuple[float, float]  # the lowest and highest value a law draws


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

    @property
    def extent(self) -> Extent:
        return self.value, self.value


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    family: Family = "uniform"
    elementwise: bool = True

    @property
    def mean(self) -> float:
        mid = (self.low + self.high) / 2
        # Bounds near the float64 limit: their sum overflows, their halves do not.
        return mid if math.isfinite(mid) else self.low / 2 + self.high / 2

    @property
    def std(self) -> float:
        width = self.high - self.low
        root12 = math.sqrt(12)
        return width / root12 if math.isfinite(width) else self.high / root12 - self.low / root12

    @property
    def extent(self) -> Extent:
        return self.low, self.high


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

    @property
    def extent(self) -> Extent:
        return self.loc - REACH_STDS * self.scale, self.loc + REACH_STDS * self.scale


@dataclass(frozen=True)
class TruncatedNormal:
    """N(loc, scale^2) conditioned on [low, high] (absolute bounds)."""

    loc: float
    scale: float
    low: float
    high: float
    family: Family = "truncated_normal"
    elementwise: bool = True

    @property
    def mean(self) -> float:
        return truncated_moments(self.loc, self.scale, self.low, self.high)[0]

    @property
    def std(self) -> float:
        return truncated_moments(self.loc, self.scale, self.low, self.high)[1]

    @property
    def extent(self) -> Extent:
        # Within 6 std of the mode (the point of [low, high] nearest loc) on either side: the density
        # there is at most that of a normal 6 std out, relative to the mode's.
        mode = min(max(self.loc, self.low), self.high)
        reach = REACH_STDS * self.scale
        return max(self.low, mode - reach), min(self.high, mode + reach)


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

    @property
    def extent(self) -> Extent:
        # An entry of a matrix with orthonormal rows or columns is at most 1 in magnitude.
        return -abs(self.gain), abs(self.gain)


def _pattern_std(ones: int, total: int) -> float:
    """The std of a 0/1 pattern with `ones` ones among `total` entries, sqrt(p (1 - p)) in exact integers
    (E[x^2] - E[x]^2 in floats cancels to nothing when p is near 1)."""
    return math.sqrt(ones * (total - ones)) / total


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
        return self.gain * (self._ones() / (self.rows * self.cols))

    @property
    def std(self) -> float:
        # The pattern and the noise are independent: their variances add (hypot: no overflow for a
        # large gain, no cancellation for a small noise).
        return math.hypot(abs(self.gain) * _pattern_std(self._ones(), self.rows * self.cols), self.noise)

    @property
    def extent(self) -> Extent:
        reach = REACH_STDS * self.noise
        return min(0.0, self.gain) - reach, max(0.0, self.gain) + reach


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
        return _pattern_std(self._ones(), self.out_channels * self.in_per_group * self.kernel)

    @property
    def extent(self) -> Extent:
        return 0.0, 1.0


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

    @property
    def extent(self) -> Extent:
        return -abs(self.gain), abs(self.gain)


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
        # (rows - zeros) / rows in integers: 1 - zeros / rows loses digits when nearly all are zero.
        return self.scale * math.sqrt((self.rows - self.zeros) / self.rows)

    @property
    def extent(self) -> Extent:
        return -REACH_STDS * self.scale, REACH_STDS * self.scale


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

    @property
    def extent(self) -> Extent:
        return -abs(self.gain), abs(self.gain)


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
