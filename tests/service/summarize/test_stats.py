"""Moments: the compiled CPU pass equals the torch pass, constant tensors measure exactly, near-constant
ones keep their digits (issue 15), and the sums of shards merge into the whole's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from initium.schemas.report import PowerSums
from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.summarize.checks import flags
from initium.service.summarize.stats import Measured, _accumulate_torch, _first_finite, _measured, measure

CPU = torch.device("cpu")


def _torch_pass(x: torch.Tensor) -> Measured:
    flat = x.reshape(-1)
    return _measured(flat.numel(), _accumulate_torch(flat, _first_finite(flat)))


def _two_pass(x: torch.Tensor) -> tuple[float, float, float]:
    """The reference: numpy's mean and central moments about it, in float64."""
    v = x.double().numpy().reshape(-1)
    v = v[np.isfinite(v)]
    mean = float(v.mean())
    return mean, float(np.sqrt(((v - mean) ** 2).mean())), float(((v - mean) ** 4).mean())


def test_the_cpu_pass_measures_what_torch_does() -> None:
    """The compiled one-pass CPU measure equals the torch pass (the CUDA path), NaN, Inf, zeros,
    half-precision and lengths that are not a multiple of its block included."""
    values = sample(d.Normal(0.3, 2.0), (300_001,), Stream((8, 8), CPU))
    values[::997] = 0.0
    values[5], values[77_777], values[-1] = math.nan, math.inf, -math.inf
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        x = values.to(dtype)
        ours, reference = measure(x), _torch_pass(x)
        assert (ours.nan_count, ours.inf_count, ours.zero_fraction, ours.n_finite) == (
            reference.nan_count, reference.inf_count, reference.zero_fraction, reference.n_finite)  # fmt: skip
        assert (ours.min, ours.max, ours.power_sums.shift) == (reference.min, reference.max, float(x[0]))
        sums, expected = ours.power_sums, reference.power_sums
        assert [sums.s1, sums.s2, sums.s3, sums.s4] == pytest.approx(
            [expected.s1, expected.s2, expected.s3, expected.s4], rel=1e-12
        )
        assert (ours.mean, ours.std, ours.central_m4) == pytest.approx(_two_pass(x), rel=1e-12)
        assert ours.sum_of_squares == pytest.approx(
            float(x.double().nan_to_num(posinf=0, neginf=0).square().sum()), rel=1e-12
        )


@pytest.mark.parametrize(("value", "dtype"), [(0.1, torch.float32), (2.65926, torch.float32), (2.65926, torch.float64),
                                              (-3.5, torch.bfloat16)])  # fmt: skip
def test_a_constant_tensor_has_std_exactly_zero(value: float, dtype: torch.dtype) -> None:
    """E[x^2] - E[x]^2 gave std 1.0e-7 for float32 0.1 and 4.99e-6 with a false flag for float64
    2.65926 (issue 15); about the first value every deviation is exactly 0, on both passes."""
    x = torch.full((1000, 1000), value, dtype=dtype)
    stored = float(x[0, 0])
    for m in (measure(x), _torch_pass(x)):
        assert (m.mean, m.std, m.central_m4, m.min, m.max) == (stored, 0.0, 0.0, stored, stored)
        assert m.sum_of_squares == pytest.approx(1e6 * stored**2, rel=1e-15)
        assert flags(m, d.Constant(value), str(dtype).removeprefix("torch.")) == []
    x[0, :3] = math.nan  # the shift is the first finite value
    m = measure(x)
    assert (m.mean, m.std, m.nan_count, m.n_finite) == (stored, 0.0, 3, 999_997)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_near_constant_tensor_keeps_its_digits(dtype: torch.dtype) -> None:
    """N(1, 1e-6) and N(1000, 1e-3): raw power sums would leave about 4 and 0 digits of the std."""
    for loc, scale in ((1.0, 1e-6), (1000.0, 1e-3)):
        x = sample(d.Normal(loc, scale), (512, 512), Stream((3, 1), CPU)).to(dtype)
        mean, std, m4 = _two_pass(x)
        for m in (measure(x), _torch_pass(x)):
            assert m.mean == pytest.approx(mean, rel=1e-15) and m.std == pytest.approx(std, rel=1e-9)
            assert m.central_m4 == pytest.approx(m4, rel=1e-7)
            assert flags(m, d.Normal(loc, scale), "float64") == []


def test_a_first_value_far_out_recentres_on_the_mean() -> None:
    """A spike leads a N(0, 1) tensor: the second pass sums about the mean, so the figures stay those
    of a two-pass reference. An identity matrix (first entry 1, mean 1/1500: 39 standard deviations
    off) stays within one pass's precision."""
    spike = sample(d.Normal(0.0, 1.0), (200_000,), Stream((4, 2), CPU)).double()
    spike[0] = 1e9
    eye = torch.eye(1500, dtype=torch.float32)
    for x, shift in ((spike, _two_pass(spike)[0]), (eye, 1.0)):
        m, reference = measure(x), _two_pass(x)
        assert m.power_sums.shift == pytest.approx(shift, rel=1e-8)  # the first pass's mean, or x[0]
        assert (m.mean, m.std, m.central_m4) == pytest.approx(reference, rel=1e-11)


def test_power_sums_of_shards_merge_into_the_whole() -> None:
    stream = Stream((9, 9), CPU)
    whole = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream))
    top = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream, [(0, 20), (0, 50)]))
    bottom = measure(sample(d.Normal(0.2, 0.7), (64, 50), stream, [(20, 64), (0, 50)]))
    assert top.power_sums.shift != bottom.power_sums.shift
    merged = top.power_sums.merge(bottom.power_sums)
    assert merged.n == whole.n_finite and merged.mean == pytest.approx(whole.mean, rel=1e-14)
    assert math.sqrt(merged.central_moment(2) or 0.0) == pytest.approx(whole.std, rel=1e-13)
    assert merged.central_moment(4) == pytest.approx(whole.central_m4, rel=1e-12)
    assert merged.central_moment(3) == pytest.approx(whole.power_sums.central_moment(3), rel=1e-10)
    assert bottom.power_sums.merge(top.power_sums).central_moment(2) == pytest.approx(
        merged.central_moment(2), rel=1e-14
    )


def test_merging_keeps_constants_exact_and_reads_old_raw_sums() -> None:
    part = measure(torch.full((3000,), 0.7, dtype=torch.float64)).power_sums
    merged = part.merge(part).merge(part)
    assert (merged.n, merged.mean, merged.central_moment(2), merged.central_moment(4)) == (9000, 0.7, 0.0, 0.0)
    assert part.merge(PowerSums(n=0, s1=0.0, s2=0.0, s3=0.0, s4=0.0)) == part
    # A report from before the shift: raw sums of x^k, shift 0 by default.
    v = np.array([0.5, -1.25, 2.0, 3.5])
    raw = PowerSums.model_validate({"n": 4, "s1": v.sum(), "s2": (v**2).sum(), "s3": (v**3).sum(), "s4": (v**4).sum()})
    assert raw.shift == 0.0 and raw.mean == pytest.approx(v.mean(), rel=1e-15)
    assert raw.central_moment(2) == pytest.approx(v.var(), rel=1e-14)
    assert raw.central_moment(4) == pytest.approx(((v - v.mean()) ** 4).mean(), rel=1e-14)
    both = raw.merge(measure(torch.tensor(v)).power_sums)
    assert both.n == 8 and both.central_moment(2) == pytest.approx(v.var(), rel=1e-14)


def test_values_near_the_float64_limit_are_measured_not_raised() -> None:
    """A constant 1e300 float64 tensor failed its job: the re-centring raised OverflowError on t**2."""
    m = measure(torch.full((32, 64), 1e300, dtype=torch.float64))
    assert m.mean == 1e300 and m.std == 0.0 and m.nan_count == m.inf_count == 0
    far = PowerSums(n=2, s1=0.0, s2=0.0, s3=0.0, s4=0.0, shift=1e300).shifted(-1e300)
    assert far.s2 == math.inf  # overflows to inf, as float arithmetic does, instead of raising


def test_a_spread_float64_sums_cannot_hold_is_missing_not_nan() -> None:
    """N(0, 1e300) squared to inf (inf - inf = NaN): the report showed std NaN beside finite values."""
    m = measure(sample(d.Normal(0.0, 1e300), (100, 100), Stream((1, 1), torch.device("cpu"))))
    assert m.std is None and m.mean is not None and math.isfinite(m.mean) and m.nan_count == 0


def test_a_spread_whose_squares_underflow_is_missing_not_zero() -> None:
    """N(0, 1e-300) float64: the squares underflow to 0, and the report read std 0.0 for distinct values."""
    m = measure(sample(d.Normal(0.0, 1e-300), (100, 100), Stream((2, 2), torch.device("cpu"))))
    assert m.std is None and m.min is not None and m.max is not None and m.min < m.max
    assert measure(torch.full((10, 10), 1e-300, dtype=torch.float64)).std == 0.0  # a constant is still exact
