"""Refuse, before anything is queued, a law the job could not carry out as planned (issue 15).

Every resolved law passes these checks: the request's dtype holds its values (a bounded law's
bounds, within 6 std of its mode for a truncated normal; 6 std either side of an unbounded law's
mean), the sampler's float64 arithmetic does not overflow (a uniform's width), its moments are
computable to float64 precision, and a truncated normal's rejection sampler can draw every element
within its round limit. Each refusal is a RequestInvalidError (422) whose loc
ends at the rule's init field at fault, with a fix that works.
"""

from __future__ import annotations

import math

from initium.schemas.dtypes import DTYPES, dtype_info
from initium.schemas.schemes import SchemeParams
from initium.service.errors import RequestInvalidError
from initium.service.plan import distributions as d
from initium.service.plan import truncated

Loc = tuple[str | int, ...]
# A law whose every element is drawn in MAX_ATTEMPTS rounds with less than this probability is refused.
MIN_DRAW_PROBABILITY = 1e-12
# The fields that scale an unbounded law's spread, by precedence, when a scheme has no bounds.
_SPREAD_FIELDS = ("std", "gain", "scale", "factor")


def check_law(dist: d.Distribution, dtype: str, elements: int, init: SchemeParams, loc: Loc, label: str) -> None:
    """Raise RequestInvalidError when `dist`, drawn `elements` times in `dtype`, cannot be carried out.

    `init` is the rule's scheme (its fields are what the error's loc names), `loc` the rule's init,
    `label` the tensor (or block) for the message. `elements` counts the whole block, a slice included.
    """
    _check_range(dist, dtype, init, loc, label)
    if isinstance(dist, d.Uniform) and not math.isfinite(dist.high - dist.low):
        # The sampler draws a + (b - a) u in float64: every value would be inf or nan.
        raise RequestInvalidError(
            f"{label}: the width of [{dist.low:.6g}, {dist.high:.6g}] overflows float64, in which the sampler "
            "computes a + (b - a) u; narrow the interval",
            (*loc, "b") if "b" in type(init).model_fields else loc,
        )
    if isinstance(dist, d.TruncatedNormal):
        _check_truncated(dist, elements, init, loc, label)
    _check_resolution(dist, dtype, init, loc, label)  # after the moments are known computable


def _check_range(dist: d.Distribution, dtype: str, init: SchemeParams, loc: Loc, label: str) -> None:
    limit = dtype_info(dtype).max_finite
    if limit is None:
        return
    for side, value in zip(("low", "high"), dist.extent, strict=True):
        if abs(value) > limit:
            how = " (6 std from its mode)" if isinstance(dist, d.Normal | d.TruncatedNormal) else ""
            field = _range_field(dist, init, side, limit)
            raise RequestInvalidError(
                f"{label}: {dist.family} reaches {value:.6g}{how}, outside {dtype}'s range [{-limit:.6g}, "
                f"{limit:.6g}]; change {field or 'the init'} so the values fit, or use {_wider(abs(value), dist)}",
                (*loc, field) if field else loc,
            )


def _check_resolution(dist: d.Distribution, dtype: str, init: SchemeParams, loc: Loc, label: str) -> None:
    """A random law the dtype cannot resolve writes a constant: every value rounds to the one nearest
    its mean (a float64 N(1e300, 1) wrote 1e300 everywhere), or to 0 (a float16 N(0, 1e-9)). Refuse it."""
    info = dtype_info(dtype)
    if info.smallest_subnormal is None or info.mantissa_bits is None or dist.std == 0:
        return
    reach = max(abs(v) for v in dist.extent)
    if _unresolved(dist, info.mantissa_bits):
        why = (f"rounds to {dist.mean:.6g} in {dtype}: its spread {dist.std:.3g} is below the dtype's "
               f"resolution there ({_spacing(dist.mean, info.mantissa_bits):.3g})")  # fmt: skip
    elif reach < info.smallest_subnormal / 2:
        smallest = info.smallest_subnormal
        why = f"(within +-{reach:.3g}) rounds to 0 in {dtype}, whose smallest nonzero value is {smallest:.3g}"
    else:
        return
    field = _range_field(dist, init, "high", math.inf)
    instead = _wider(reach, dist, otherwise="")
    raise RequestInvalidError(
        f"{label}: every value of this {dist.family} law {why}; change {field or 'the init'}"
        + (f" or use {instead}" if instead else ""),
        (*loc, field) if field else loc,
    )


def _spacing(value: float, mantissa_bits: int) -> float:
    """The gap between neighbouring values of a dtype with this mantissa at `value`."""
    return 2.0 ** (math.frexp(abs(value))[1] - 1 - mantissa_bits) if value else 0.0


def _unresolved(dist: d.Distribution, mantissa_bits: int) -> bool:
    """Whether the law's whole reach lies within half a gap of its mean: every value rounds to one."""
    return dist.std > 0 and dist.extent[1] - dist.extent[0] < _spacing(dist.mean, mantissa_bits) / 2


def _wider(value: float, dist: d.Distribution | None = None, otherwise: str = "smaller values") -> str:
    """The smallest dtype that holds `value` and (given `dist`) resolves its spread and does not round
    it to 0; `otherwise` when none does."""
    fits = [n for n in DTYPES.names() if (dtype_info(n).max_finite or 0.0) >= value and _resolves(dist, n)]
    return f"dtype {min(fits, key=lambda n: dtype_info(n).itemsize)}" if fits else otherwise


def _resolves(dist: d.Distribution | None, dtype: str) -> bool:
    info = dtype_info(dtype)
    if dist is None or dist.std == 0 or info.mantissa_bits is None or info.smallest_subnormal is None:
        return True
    reach = max(abs(v) for v in dist.extent)
    return not _unresolved(dist, info.mantissa_bits) and reach >= info.smallest_subnormal / 2


def _range_field(dist: d.Distribution, init: SchemeParams, side: str, limit: float) -> str | None:
    """The request field that sets the out-of-range end of the law."""
    names = type(init).model_fields
    if isinstance(dist, d.Constant) and "value" in names:
        return "value"
    if isinstance(dist, d.Uniform | d.TruncatedNormal) and "a" in names and "b" in names:
        bound = dist.low if side == "low" else dist.high
        if bound == (dist.extent[0] if side == "low" else dist.extent[1]):
            return "a" if side == "low" else "b"
    if isinstance(dist, d.Normal | d.TruncatedNormal) and "mean" in names and abs(dist.loc) > limit:
        return "mean"
    # Several fields may scale the law (identity_plus_noise's gain and std): the largest is at fault.
    spread = [n for n in _SPREAD_FIELDS if n in names and isinstance(getattr(init, n), int | float)]
    return max(spread, key=lambda n: abs(getattr(init, n)), default=None)


def _check_truncated(dist: d.TruncatedNormal, elements: int, init: SchemeParams, loc: Loc, label: str) -> None:
    """Its moments converge, and the sampler can draw it: far in a tail the sampler proposes uniformly
    over [a, b], so with the far bound many std beyond the near one almost no proposal is accepted and
    the job would fail after MAX_ATTEMPTS rounds."""
    field = "b" if dist.low >= dist.loc else "a"  # the bound away from the mean
    at = (*loc, field) if field in type(init).model_fields else loc
    try:
        truncated.truncated_moments(dist.loc, dist.scale, dist.low, dist.high)  # cached for the plan
    except truncated.MomentsNotComputableError as exc:
        raise RequestInvalidError(f"{label}: {exc}; widen the interval or move {field} towards the mean", at) from None
    p = truncated.rejection_acceptance(dist.loc, dist.scale, dist.low, dist.high)
    if elements == 0 or elements * _log_all_drawn(p) >= math.log(MIN_DRAW_PROBABILITY):
        return
    reach = truncated.tail_reach(dist.loc, dist.scale, dist.low, dist.high)
    in_std = getattr(init, "bounds", "absolute") == "std"
    value = (reach - dist.loc) / dist.scale if in_std else reach
    raise RequestInvalidError(
        f"{label}: a truncated normal on [{dist.low:.6g}, {dist.high:.6g}] accepts {p:.3g} of the sampler's "
        f"proposals, so its {elements:,} values cannot all be drawn in {truncated.MAX_ATTEMPTS:,} rounds; "
        f"less than 1e-16 of its mass lies beyond {value!r}{' std' if in_std else ''}: set {field} to that "
        "(the moments move by less than 1e-12)",
        at,
    )


def _log_all_drawn(p: float) -> float:
    """log P(one element is accepted within MAX_ATTEMPTS rounds), for acceptance p per round."""
    if p >= 1.0:
        return 0.0
    missed = math.exp(truncated.MAX_ATTEMPTS * math.log1p(-p))  # (1 - p)^MAX_ATTEMPTS
    return math.log1p(-missed) if missed < 1.0 else -math.inf
