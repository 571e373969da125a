"""Exact mean and std of N(loc, scale^2) conditioned on [low, high], over every interval the schema admits.

The textbook form (Johnson, Kotz and Balakrishnan 1994, eq. 13.134) divides by Phi(beta) - Phi(alpha):
in float64 that difference loses every digit when both CDF values are near 1 (an interval in the
upper tail: issue 15 found the plan's mean outside [8, 9] and a ZeroDivisionError from 8.3 std), and
its variance cancels when the interval is narrow. The textbook form is kept where it is exact to about
1e-15 (the interval holds the mean and is at least one std wide: every preset's +-2 std); everywhere
else the moments come from mpmath, anchored at the bound nearest the mean so no CDF near 1 appears,
at a precision raised until two evaluations agree.
"""

from __future__ import annotations

import functools
import math

import mpmath
from mpmath import mpf

# Two evaluations, at p and p + GUARD bits, must agree to AGREE bits before a result is returned.
GUARD = 64
AGREE = 60
MAX_PREC = 1 << 15  # bits; far above what any interval of float64 bounds needs (about 7,000)


class MomentsNotComputableError(ValueError):
    """The law's moments did not converge within MAX_PREC bits of working precision."""


@functools.lru_cache(maxsize=4096)
def truncated_moments(loc: float, scale: float, low: float, high: float) -> tuple[float, float]:
    """(mean, std) of N(loc, scale^2) on [low, high], each within 1e-15 of the exact value, relative
    (or, for a mean near 0, relative to the std); correctly rounded where mpmath computes them.

    Needs scale > 0 and low <= high, all finite; raises MomentsNotComputableError where the
    precision needed exceeds MAX_PREC (no interval of float64 bounds is known to).
    """
    if low == high:  # bounds in std units around a large mean can round to one value: a point mass
        return low, 0.0
    alpha, beta = (low - loc) / scale, (high - loc) / scale
    if alpha <= 0 <= beta and beta - alpha >= 1:
        return _textbook(loc, scale, alpha, beta)
    return _converged(loc, scale, low, high)


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _textbook(loc: float, scale: float, alpha: float, beta: float) -> tuple[float, float]:
    # alpha <= 0 <= beta: the erf values have opposite signs, so their difference is a sum (no
    # cancellation), and Z >= Phi(1) - Phi(0) = 0.34 for a width of at least 1.
    z = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
    a_term = alpha * _phi(alpha) if math.isfinite(alpha) else 0.0
    b_term = beta * _phi(beta) if math.isfinite(beta) else 0.0
    shift = (_phi(alpha) - _phi(beta)) / z
    return loc + scale * shift, scale * math.sqrt(max(0.0, 1 + (a_term - b_term) / z - shift * shift))


def _converged(loc: float, scale: float, low: float, high: float) -> tuple[float, float]:
    prec = _start_prec(loc, scale, low, high)
    while prec <= MAX_PREC:
        with mpmath.workprec(prec):
            first = _anchored(loc, scale, low, high, prec)
        with mpmath.workprec(prec + GUARD):
            second = _anchored(loc, scale, low, high, prec + GUARD)
            if all(_agree(x, y) for x, y in zip(first, second, strict=True)):
                return float(second[0]), float(second[1])
        prec *= 2
    raise MomentsNotComputableError(
        f"the moments of N({loc!r}, {scale!r}^2) on [{low!r}, {high!r}] did not converge in {MAX_PREC} bits"
    )


def _agree(x: mpf, y: mpf) -> bool:
    return bool(x == y or abs(x - y) <= abs(y) * mpf(2) ** -AGREE)


def _start_prec(loc: float, scale: float, low: float, high: float) -> int:
    # The closed forms below cancel about 2 log2(1 / width) bits for narrow intervals and 4 log2(u)
    # bits far in a tail (u std from the mean): start with enough for both.
    width = (high - low) / scale if math.isfinite(high - low) else math.inf
    near = min(abs(low - loc), abs(high - loc)) / scale if not low <= loc <= high else 0.0
    narrow = max(0.0, -math.log2(width)) if width > 0 else 1100.0
    return int(128 + 3 * narrow + 4 * math.log2(2 + min(near, 1e6)))


def _anchored(loc: float, scale: float, low: float, high: float, prec: int) -> tuple[mpf, mpf]:
    """(mean, std) at the current precision, by the moments of the distance from an anchor point."""
    m_loc, m_scale, m_low, m_high = mpf(loc), mpf(scale), mpf(low), mpf(high)
    if m_low >= m_loc:  # upper side: X = low + scale T, T >= 0
        mean_t, var_t = _from_anchor((m_low - m_loc) / m_scale, (m_high - m_low) / m_scale, prec)
        return m_low + m_scale * mean_t, m_scale * mpmath.sqrt(var_t)
    if m_high <= m_loc:  # lower side, by symmetry: X = high - scale T
        mean_t, var_t = _from_anchor((m_loc - m_high) / m_scale, (m_high - m_low) / m_scale, prec)
        return m_high - m_scale * mean_t, m_scale * mpmath.sqrt(var_t)
    # The interval holds loc: the two sides [loc, high] and [low, loc] anchored at loc, mixed.
    right = _raw_moments(mpf(0), (m_high - m_loc) / m_scale, prec)
    left = _raw_moments(mpf(0), (m_loc - m_low) / m_scale, prec)
    mass = right[0] + left[0]
    shift = (right[1] - left[1]) / mass
    var = (right[2] + left[2]) / mass - shift * shift
    return m_loc + m_scale * shift, m_scale * mpmath.sqrt(var)


def _from_anchor(u: mpf, w: mpf, prec: int) -> tuple[mpf, mpf]:
    m0, m1, m2 = _raw_moments(u, w, prec)
    mean = m1 / m0
    return mean, m2 / m0 - mean * mean


def _raw_moments(u: mpf, w: mpf, prec: int) -> tuple[mpf, mpf, mpf]:
    """M_k = integral over [0, w] of t^k exp(-u t - t^2 / 2) dt for k = 0, 1, 2 (u >= 0).

    The density of the distance T from the anchor is proportional to exp(-u t - t^2 / 2), u the
    anchor's distance from the mean in std. M0 is a difference of erfc values (no CDF near 1); M1
    and M2 follow by integrating (u + t) exp(...) exactly: M1 = 1 - e^-G - u M0 and
    M2 = M0 - w e^-G - u M1, with G = u w + w^2 / 2.
    """
    # Past t_max, exp(-t^2 / 2) < 2^-(prec + 64): the rest of [0, w] adds nothing at this precision
    # (and mpmath's erfc overflows on arguments near 1e300).
    w = min(w, mpmath.sqrt(2 * (prec + GUARD) * mpmath.ln(2)) + 1)
    g = u * w + w * w / 2
    m0 = (
        mpmath.sqrt(mpmath.pi / 2)
        * mpmath.exp(u * u / 2)
        * (mpmath.erfc(u / mpmath.sqrt(2)) - mpmath.erfc((u + w) / mpmath.sqrt(2)))
    )
    m1 = -mpmath.expm1(-g) - u * m0
    m2 = m0 - w * mpmath.exp(-g) - u * m1
    return m0, m1, m2


# The reference sampler's proposal switch and round limit (initium.service.materialize.sampling, which
# the planner cannot import: it imports torch); a test holds the two pairs equal.
NORMAL_PROPOSAL_MIN_MASS = 0.3
MAX_ATTEMPTS = 100_000
# Beyond this many nats below the density at the bound nearest loc, a truncated normal holds less
# than 1e-16 of its mass: a far bound past it changes no moment and no draw that float64 can see.
TAIL_NATS = 37.0


@functools.lru_cache(maxsize=4096)
def rejection_acceptance(loc: float, scale: float, low: float, high: float) -> float:
    """The chance that one round of the reference sampler accepts an element of N(loc, scale^2) on
    [low, high]: the law's mass when it proposes normals (mass >= 0.3), else the chance a uniform
    proposal on the interval passes exp(-(x^2 - m^2) / 2), m the point nearest loc (std units)."""
    if low == high:  # every proposal is the point itself, and passes
        return 1.0
    # An interval w std units wide has mass about w phi(u): erfc differences cancel -log2(w) bits of
    # it, so a width of 1e-30 std needs about 100 bits more (at 96 it read 0 and was refused).
    width = (high - low) / scale
    extra = max(0, -math.frexp(width)[1]) if width > 0 else 0
    with mpmath.workprec(96 + extra):
        m_loc, m_scale = mpf(loc), mpf(scale)
        alpha, beta = (mpf(low) - m_loc) / m_scale, (mpf(high) - m_loc) / m_scale
        if alpha >= 0 or beta <= 0:  # one side of loc: anchored at the bound nearest it
            u, w = min(abs(alpha), abs(beta)), beta - alpha
            m0 = _raw_moments(u, w, 96 + extra)[0]
        else:
            u, w = mpf(0), beta - alpha
            m0 = _raw_moments(u, beta, 96 + extra)[0] + _raw_moments(u, -alpha, 96 + extra)[0]
        mass = m0 * mpmath.npdf(u)
        return float(mass if mass >= NORMAL_PROPOSAL_MIN_MASS else m0 / w)


def tail_reach(loc: float, scale: float, low: float, high: float) -> float:
    """Where a far bound of a one-sided interval may move without changing the law: TAIL_NATS
    below the density at the near bound, so less than 1e-16 of the mass lies beyond (absolute value)."""
    upper = low >= loc
    u = ((low - loc) if upper else (loc - high)) / scale
    t = math.sqrt(u * u + 2 * TAIL_NATS) - u  # u t + t^2 / 2 = TAIL_NATS
    return low + t * scale if upper else high - t * scale
