"""Every law's planned mean and std against mpmath, at the edges of what the schemes can ask for (issue 15).

Each family has a strategy drawing its laws (parameters at their limits: bounds near the float64
maximum, tail intervals up to the schema's 37 std, intervals a few ulps wide, matrices of 2^31 rows)
and a reference computed in mpmath from the law's definition, not from its closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import mpmath
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mpmath import mpf
from pydantic import ValidationError

from initium.schemas.schemes import TruncatedNormal as WireTruncatedNormal
from initium.service.plan import distributions as d
from initium.service.plan.schemes import Geometry, resolve

Reference = Callable[[Any], tuple[mpf, mpf]]
MAX = 1.7976931348623157e308
REL = 1e-9  # the tolerance: relative, or ABS_OF_STD times the std where the mean is near 0
ABS_OF_STD = 1e-12
# Below 2.2e-308 float64 keeps fewer digits: a value there is held to a few steps of its 4.9e-324 grid.
SUBNORMAL = 4 * 4.9e-324


def _magnitudes(low_exp: float, high_exp: float) -> st.SearchStrategy[float]:
    """Signed values spread evenly over decades, plus 0 and the exact ends."""
    spread = st.floats(low_exp, high_exp).map(lambda e: 10.0**e)
    ends = st.sampled_from([0.0, 10.0**low_exp, 10.0**high_exp, MAX])
    return st.tuples(st.one_of(spread, ends), st.booleans()).map(lambda v: -v[0] if v[1] else v[0])


FINITE = _magnitudes(-300, 308)
SIZES = st.one_of(st.integers(1, 16), st.integers(1, 2**31), st.sampled_from([1, 2, 2**31 - 1, 2**31]))
GAINS = st.one_of(_magnitudes(-300, 300).map(abs), st.sampled_from([0.0, 1.0, 1e154, 1e300]))


def _pair(draw: st.DrawFn) -> tuple[float, float]:
    low, high = sorted((draw(FINITE), draw(FINITE)))
    assume(low < high)
    return low, high


@st.composite
def _constant(draw: st.DrawFn) -> d.Constant:
    return d.Constant(draw(FINITE))


@st.composite
def _uniform(draw: st.DrawFn) -> d.Uniform:
    return d.Uniform(*_pair(draw))


@st.composite
def _normal(draw: st.DrawFn) -> d.Normal:
    return d.Normal(draw(FINITE), abs(draw(FINITE)))


@st.composite
def _truncated(draw: st.DrawFn) -> d.TruncatedNormal:
    """Through the wire model and the scheme, so only laws a request can ask for are drawn."""
    std = draw(st.one_of(_magnitudes(-250, 250).map(abs), st.just(1.0)))
    assume(std > 0)
    mean = draw(st.one_of(st.just(0.0), _magnitudes(-250, 250), st.floats(-50, 50).map(lambda k: k * std)))
    a = draw(st.one_of(st.floats(-45, 45), st.sampled_from([-37.0, 8.0, 8.3, 30.0, 36.9, -1e300])))
    width = draw(st.one_of(st.floats(-14, 3).map(lambda e: 10.0**e), st.sampled_from([1e-300, 1.0, 50.0, 1e300])))
    bounds: Literal["std", "absolute"] = draw(st.sampled_from(["std", "absolute"]))
    b = a + width
    if bounds == "absolute":
        a, b = mean + a * std, mean + b * std
    try:
        params = WireTruncatedNormal(scheme="truncated_normal", mean=mean, std=std, a=a, b=b, bounds=bounds)
    except ValidationError:
        assume(False)
    law = resolve(params, Geometry((4, 4), 4, 4))
    assert isinstance(law, d.TruncatedNormal)
    # A std below float64's normal range is not representable to 1e-9 (subnormals have fewer digits).
    assume(law.scale * min(1.0, (law.high - law.low) / law.scale) > 1e-290)
    return law


@st.composite
def _orthogonal(draw: st.DrawFn) -> d.Orthogonal:
    return d.Orthogonal(draw(GAINS), draw(SIZES), draw(SIZES))


@st.composite
def _eye(draw: st.DrawFn) -> d.Eye:
    rows, cols, tile = draw(SIZES), draw(SIZES), draw(st.booleans())
    if tile:
        rows = cols * draw(st.integers(1, 64))
    gain = draw(st.one_of(GAINS, GAINS.map(lambda g: -g)))
    return d.Eye(gain, rows, cols, tile, draw(st.one_of(st.just(0.0), GAINS, st.just(1e-10 * abs(gain)))))


@st.composite
def _dirac(draw: st.DrawFn) -> d.Dirac:
    groups = draw(st.integers(1, 64))
    out = groups * draw(SIZES.map(lambda n: min(n, 2**24)))
    kernel = draw(st.sampled_from([1, 3, 9, 27, 2**20]))
    return d.Dirac(out, draw(SIZES.map(lambda n: min(n, 2**24))), groups, kernel, kernel // 2)


@st.composite
def _delta_orthogonal(draw: st.DrawFn) -> d.DeltaOrthogonal:
    in_channels = draw(SIZES)
    out_channels = in_channels + draw(st.integers(0, 2**31))
    kernel = draw(st.sampled_from([1, 3, 9, 27, 2**20]))
    return d.DeltaOrthogonal(draw(GAINS), out_channels, in_channels, kernel, kernel // 2)


@st.composite
def _sparse(draw: st.DrawFn) -> d.Sparse:
    # Nearly all zeros in a tall column: 1 - zeros / rows loses up to 8 digits there.
    rows = draw(st.one_of(SIZES, st.integers(10**6, 10**9)))
    zeros = draw(st.one_of(st.integers(0, rows), st.sampled_from([0, rows - 1, rows])))
    return d.Sparse(abs(draw(FINITE)), rows, draw(SIZES), min(zeros, rows))


@st.composite
def _looks_linear(draw: st.DrawFn) -> d.LooksLinear:
    return d.LooksLinear(draw(GAINS), draw(SIZES), draw(SIZES))


def _ref_truncated(law: d.TruncatedNormal) -> tuple[mpf, mpf]:
    """The textbook moments (Johnson, Kotz and Balakrishnan 1994) at a precision that covers the CDF's
    digits lost near 1 (up to ~1,000 bits at 37 std) and a narrow interval's cancellation."""
    with mpmath.workprec(2200):
        width = (mpf(law.high) - mpf(law.low)) / mpf(law.scale)
        narrow = max(0, -int(mpmath.log(width, 2)))
        near = min(max((mpf(law.low) - law.loc) / law.scale, 0), 60)
    # 1 - Phi(x) is about exp(-x^2 / 2): that many bits (0.73 x^2) of Phi near 1 are lost.
    start = 160 + int(0.73 * near**2) + 3 * narrow
    results = []
    for prec in (start, start + 128):
        with mpmath.workprec(prec):
            # A bound past 60 std is taken at 60 std (the mass beyond is below 1e-780; mpmath's
            # erfc overflows near 1e300).
            alpha = max((mpf(law.low) - mpf(law.loc)) / mpf(law.scale), -60)
            beta = min((mpf(law.high) - mpf(law.loc)) / mpf(law.scale), 60)
            z = mpmath.ncdf(beta) - mpmath.ncdf(alpha)
            pa, pb = mpmath.npdf(alpha), mpmath.npdf(beta)
            shift = (pa - pb) / z
            var = 1 + (alpha * pa - beta * pb) / z - shift * shift
            results.append((mpf(law.loc) + mpf(law.scale) * shift, mpf(law.scale) * mpmath.sqrt(var)))
    (m1, s1), (m2, s2) = results
    assert abs(m1 - m2) <= abs(m2) * mpf(2) ** -80 + s2 * mpf(2) ** -80 and abs(s1 - s2) <= s2 * mpf(2) ** -80
    return m2, s2


def _pattern(gain: float, ones: int, total: int, noise: float = 0.0) -> tuple[mpf, mpf]:
    """gain times a Bernoulli(ones / total) pattern plus independent N(0, noise^2): their variances add."""
    mean = mpf(gain) * ones / total
    return mean, mpmath.sqrt(mpf(gain) ** 2 * ones * (total - ones) / mpf(total) ** 2 + mpf(noise) ** 2)


def _rms(square_sum: mpf, total: int) -> tuple[mpf, mpf]:
    """A law centred at 0 whose squared entries sum to `square_sum` (orthonormal rows or columns)."""
    return mpf(0), mpmath.sqrt(square_sum / total)


def _ref_dirac(law: d.Dirac) -> tuple[mpf, mpf]:
    ones = law.groups * min(law.out_channels // law.groups, law.in_per_group)
    return _pattern(1.0, ones, law.out_channels * law.in_per_group * law.kernel)


def _ref_eye(law: d.Eye) -> tuple[mpf, mpf]:
    ones = law.rows if law.tile else min(law.rows, law.cols)
    return _pattern(law.gain, ones, law.rows * law.cols, law.noise)


REFERENCES: dict[str, tuple[st.SearchStrategy[Any], Reference]] = {
    "constant": (_constant(), lambda law: (mpf(law.value), mpf(0))),
    "uniform": (_uniform(), lambda law: ((mpf(law.low) + law.high) / 2, (mpf(law.high) - law.low) / mpmath.sqrt(12))),
    "normal": (_normal(), lambda law: (mpf(law.loc), mpf(law.scale))),
    "truncated_normal": (_truncated(), _ref_truncated),
    "orthogonal": (_orthogonal(), lambda law: _rms(mpf(law.gain) ** 2 * min(law.rows, law.cols), law.rows * law.cols)),
    "eye": (_eye(), _ref_eye),
    "dirac": (_dirac(), _ref_dirac),
    "delta_orthogonal": (
        _delta_orthogonal(),
        lambda law: _rms(mpf(law.gain) ** 2 * law.in_channels, law.out_channels * law.in_channels * law.kernel),
    ),
    "sparse": (
        _sparse(),
        lambda law: _rms(mpf(law.scale) ** 2 * (law.rows - law.zeros) * law.cols, law.rows * law.cols),
    ),
    "looks_linear": (
        _looks_linear(),
        lambda law: _rms(2 * mpf(law.gain) ** 2 * min(law.rows, law.half_cols), 2 * law.rows * law.half_cols),
    ),
}


def test_every_family_has_a_reference() -> None:
    assert set(REFERENCES) == set(d.FAMILIES)


def _assert_agrees(law: d.Distribution, reference: tuple[mpf, mpf]) -> None:
    mean, std = reference
    if max(abs(mean), std) > MAX:  # beyond float64: the range check refuses the law for every dtype
        assert max(abs(end) for end in law.extent) > MAX
        return
    assert abs(law.mean - mean) <= max(REL * abs(mean), ABS_OF_STD * std, SUBNORMAL), (law, law.mean, float(mean))
    assert abs(law.std - std) <= max(REL * std, SUBNORMAL), (law, law.std, float(std))


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_moments_agree_with_mpmath(family: str) -> None:
    strategy, reference = REFERENCES[family]
    examples = 100 if family == "truncated_normal" else 50

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(strategy)
    def check(law: d.Distribution) -> None:
        with mpmath.workprec(2200):  # covers the float64 range's exponents exactly
            _assert_agrees(law, reference(law))

    check()


# The inputs and the upper-tail intervals beyond them: mpmath's values, correctly rounded
# (scipy's truncnorm agrees to 1e-11: 8.121188992979867 and 0.11894764723259385 for [8, 9]).
PINNED = [
    ((0.0, 1.0, 8.0, 9.0), 8.121188992979796, 0.11894764723502567),
    ((0.0, 1.0, 8.3, 9.0), 8.415711923064901, 0.11112337401673222),
    ((0.0, 1.0, 30.0, 31.0), 30.033259667433622, 0.03322305693092197),
    ((0.0, 1.0, -9.0, -8.0), -8.121188992979796, 0.11894764723502567),
    ((0.0, 1.0, 36.9, 37.5), 36.92706061005147, 0.027040857907290987),
    ((1.0, 0.5, 5.0, 5.5), 5.060594496489898, 0.059473823617512835),  # [8, 9] std units, mean 1, std 0.5
    ((2.0, 3.0, 26.0, 29.0), 26.363566978939392, 0.356842941705077),  # bounds="std" a=8, b=9 with mean 2, std 3
    ((0.0, 1.0, 0.5, 0.500000001), 0.5000000004999999, 2.886751264305225e-10),  # narrow: nearly U(a, b)
    ((0.0, 1.0, -2.0, 2.0), 0.0, 0.8796256610342398),  # the +-2 std of every preset
]


@pytest.mark.parametrize(("law", "mean", "std"), PINNED)
def test_pinned_truncated_moments(law: tuple[float, float, float, float], mean: float, std: float) -> None:
    dist = d.TruncatedNormal(*law)
    assert dist.mean == pytest.approx(mean, rel=1e-15, abs=1e-300)
    assert dist.std == pytest.approx(std, rel=1e-15)
    assert dist.low <= dist.mean <= dist.high


def test_moments_near_the_float64_limit_do_not_overflow() -> None:
    """(a + b) / 2 and b - a overflowed to inf; so did gain^2 in the eye's variance."""
    assert d.Uniform(-MAX, MAX).mean == 0.0
    assert d.Uniform(-MAX, MAX).std == pytest.approx(MAX / 3**0.5, rel=1e-15)
    assert d.Uniform(MAX / 2, MAX).mean == pytest.approx(0.75 * MAX, rel=1e-15)
    assert d.Eye(1e300, 2, 2, tile=False, noise=0.0).std == pytest.approx(0.5e300, rel=1e-15)


def test_a_nearly_all_zero_column_keeps_its_digits() -> None:
    """1 - zeros / rows in floats was 2.6e-9 off for 123,456,788 zeros in 123,456,789 rows."""
    rows = 123_456_789
    assert d.Sparse(1.0, rows, 3, rows - 1).std == pytest.approx(float(mpmath.sqrt(mpf(1) / rows)), rel=1e-15)


def test_a_small_noise_on_the_identity_is_not_lost() -> None:
    """E[x^2] - E[x]^2 for a 1 x 1 eye with noise 1e-10 cancelled to 0."""
    assert d.Eye(1.0, 1, 1, tile=False, noise=1e-10).std == pytest.approx(1e-10, rel=1e-15)
