"""The report's histograms: counts that add up, expected counts that are the law's (scipy's CDF, and
the law rounded to bfloat16 where the dtype is that coarse), and only the largest weights kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from initium.schemas.plan import PlannedTensor
from initium.schemas.report import Histogram, TensorStats
from initium.service.materialize.sampling import Stream, sample
from initium.service.materialize.tensor import TORCH_DTYPES
from initium.service.plan import distributions as d
from initium.service.summarize import histogram as hist
from initium.service.summarize.histogram import BINS, SAMPLE, histogram, keep_largest, law_range

CPU = torch.device("cpu")
# Each law with scipy's frozen law: the reference for the expected counts.
LAWS: dict[str, tuple[d.Distribution, Any]] = {
    "normal": (d.Normal(0.1, 0.05), stats.norm(0.1, 0.05)),
    "uniform": (d.Uniform(-0.3, 0.2), stats.uniform(-0.3, 0.5)),
    "truncated_normal": (d.TruncatedNormal(0.0, 0.4, -0.5, 0.7), stats.truncnorm(-1.25, 1.75, loc=0.0, scale=0.4)),
}


def _planned(dtype: str = "float32", role: str = "weight") -> PlannedTensor:
    return PlannedTensor.model_validate({
        "name": "w", "shape": [SAMPLE], "dtype": dtype, "module": "", "module_type": "linear", "role": role,
        "fan_in": 1, "fan_out": 1, "followed_by": None, "rule": None, "init": None, "distribution": None,
        "expected_mean": None, "expected_std": None, "elementwise": True,
    })  # fmt: skip


def _chi2_pvalue(counts: np.ndarray, expected: np.ndarray) -> float:
    """Pearson's test over the bins expecting at least 5 values."""
    keep = expected >= 5
    statistic = float((((counts - expected) ** 2) / expected)[keep].sum())
    return float(stats.chi2.sf(statistic, int(keep.sum()) - 1))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("law", sorted(LAWS))
def test_counts_add_up_and_fit_the_law(law: str, dtype: str) -> None:
    dist, reference = LAWS[law]
    values = sample(dist, (SAMPLE,), Stream((3, 4), CPU), dtype=TORCH_DTYPES[dtype])
    h = histogram(_planned(dtype), values, dist)
    assert h is not None and h.n == SAMPLE and len(h.counts) == len(h.expected) == BINS
    assert sum(h.counts) + h.below + h.above == h.n
    assert (h.low, h.high) == pytest.approx(law_range(dist))
    assert _chi2_pvalue(np.array(h.counts), np.array(h.expected)) > 1e-3
    if dtype == "float32":  # the expected counts are scipy's law over the same edges
        edges = np.linspace(h.low, h.high, BINS + 1)
        assert h.expected == pytest.approx(SAMPLE * np.diff(reference.cdf(edges)), abs=2e-3)


def test_bfloat16_counts_expect_the_rounded_law(monkeypatch: pytest.MonkeyPatch) -> None:
    # A million bfloat16 values: against the continuous law the few values per bin show as a
    # misfit; against the law rounded to bfloat16 they fit.
    monkeypatch.setattr(hist, "SAMPLE", 1 << 20)
    dist = d.Normal(0.0, 0.05)
    values = sample(dist, (1 << 20,), Stream((5, 6), CPU), dtype=torch.bfloat16)
    h = histogram(_planned("bfloat16"), values, dist)
    assert h is not None and h.n == 1 << 20
    continuous = h.n * np.diff(stats.norm(0.0, 0.05).cdf(np.linspace(h.low, h.high, BINS + 1)))
    assert _chi2_pvalue(np.array(h.counts), np.array(h.expected)) > 1e-3
    assert _chi2_pvalue(np.array(h.counts), continuous) < 1e-6
    # Rounding moves mass between bins, and only a trace across the range's two ends.
    assert sum(h.expected) == pytest.approx(sum(continuous), rel=1e-5)


def test_a_large_tensor_is_sampled_with_an_even_stride() -> None:
    dist = d.Normal(0.0, 1.0)
    values = sample(dist, (3 * SAMPLE + 1,), Stream((7, 8), CPU), dtype=torch.float32)
    h = histogram(_planned(), values, dist)
    assert h is not None and h.n == len(range(0, 3 * SAMPLE + 1, 4))  # stride ceil(n / SAMPLE) = 4
    strided = values[::4].double()
    assert h.below == int((strided < h.low).sum()) and h.above == int((strided > h.high).sum())


def test_values_outside_the_range_are_counted_apart() -> None:
    dist = d.Uniform(-1.0, 1.0)
    values = torch.tensor([-1.0, -0.5, 0.0, 1.0, 1.5, -3.0, float("nan"), float("inf")])
    h = histogram(_planned(), values, dist)
    assert h is not None and (h.n, h.below, h.above) == (7, 1, 2)  # NaN is not binned; +inf is above
    assert h.counts[0] == 1 and h.counts[BINS // 4] == 1 and h.counts[BINS // 2] == 1 and h.counts[-1] == 1


@pytest.mark.parametrize(
    ("role", "dist"),
    [
        ("bias", d.Normal(0.0, 1.0)),  # weights only
        ("weight", d.Constant(0.5)),  # nothing to bin against
        ("weight", d.Orthogonal(1.0, 256, 256)),  # drawn as a whole
        ("weight", d.Eye(1.0, 256, 256, False, 0.01)),  # no CDF in the report
        ("weight", None),  # packed parts with several laws
    ],
)
def test_no_histogram_where_it_says_nothing(role: str, dist: d.Distribution | None) -> None:
    assert histogram(_planned(role=role), torch.zeros(SAMPLE), dist) is None


def test_a_failure_gives_no_histogram_and_never_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> Histogram:
        raise RuntimeError("boom")

    monkeypatch.setattr(hist, "_histogram", broken)
    assert histogram(_planned(), torch.zeros(10), d.Normal(0.0, 1.0)) is None


def test_bins_cover_the_bulk_within_the_support() -> None:
    assert law_range(d.Uniform(-0.3, 0.2)) == (-0.3, 0.2)
    assert law_range(d.Normal(1.0, 0.5)) == (-1.0, 3.0)
    low, high = law_range(d.TruncatedNormal(0.0, 0.02, -2.0, 2.0))  # ViT's trunc_normal_(std=0.02)
    assert (low, high) == pytest.approx((-0.08, 0.08), rel=1e-3)


def _stats(name: str, shape: list[int], with_histogram: bool = True) -> TensorStats:
    h = Histogram(low=-1, high=1, counts=[1], expected=[1.0], below=0, above=0, n=1) if with_histogram else None
    return TensorStats(
        name=name, shape=shape, dtype="float32", role="weight", scheme="normal", params=None, rule=None,
        fan_in=1, fan_out=1, expected_mean=0.0, expected_std=1.0, mean=0.0, std=1.0, min=-1.0, max=1.0,
        abs_max=1.0, zero_fraction=0.0, nan_count=0, inf_count=0, histogram=h,
    )  # fmt: skip


def test_the_report_keeps_the_largest_weights_histograms() -> None:
    stats_in = [_stats("a", [10, 10]), _stats("b", [30, 10]), _stats("c", [1000], False), _stats("d", [20, 10]),
                _stats("e", [300]), _stats("f", [5, 10])]  # fmt: skip
    kept = keep_largest(stats_in, k=3)
    assert [s.name for s in kept] == ["a", "b", "c", "d", "e", "f"]  # every tensor, in order
    assert [s.name for s in kept if s.histogram is not None] == ["b", "d", "e"]  # 300, 200 and 300 values
    assert kept[1] is stats_in[1]  # a kept one is the same object
    assert [s.name for s in keep_largest(stats_in, k=1) if s.histogram is not None] == ["b"]  # a tie: the first
