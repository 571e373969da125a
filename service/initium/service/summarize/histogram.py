"""The report's histograms: a weight's values in equal bins, next to the counts its law predicts.

The bins are the law's, not the data's: BINS equal bins over mean ± SPAN std, within the law's
support where it is bounded (uniform, truncated normal). So the expected counts need no data, and
a rare far value is counted in `below` or `above` instead of stretching the bins. The values
binned are the whole tensor up to SAMPLE values, else an evenly strided sample of at most SAMPLE:
the draws are independent per element (elementwise laws only), so a stride is a fair sample, as for
checks.fit's KS sample. The values are binned in float64 on the tensor's device (about 1 ms a
weight on a CPU), the law's BINS + 1 CDF values are taken on the CPU.

For float16 and bfloat16 the expected counts are those of the law rounded to the dtype: each
representable value takes the law's mass of the reals that round to it (round to nearest, as the
samplers' final cast). Otherwise the few representable values per bin would read as a misfit: in
bfloat16 a bin 0.2 std wide holds a dozen values near 3 std, enough for a sawtooth of several
percent against the continuous law.

The report keeps the histograms of the job's HISTOGRAMS largest weights (`keep_largest`): enough
for the page's plots, and a report of a thousand tensors does not carry a thousand histograms.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import torch

from initium.schemas.dtypes import DTYPES
from initium.schemas.plan import PlannedTensor
from initium.schemas.report import Histogram, TensorStats
from initium.service.plan import distributions as d
from initium.service.summarize.checks import LAW_CHECKS, cdf

BINS = 40
SAMPLE = 1 << 16
SPAN = 4.0
HISTOGRAMS = 4

log = logging.getLogger("initium.worker")


def histogram(planned: PlannedTensor, values: torch.Tensor, dist: d.Distribution | None) -> Histogram | None:
    """A weight's histogram against its law; None for other roles, laws drawn as a whole, constant
    laws and laws without a CDF here (checks.cdf). A plot never fails a job (DESIGN 1): an error
    is logged and the tensor gets no histogram."""
    if planned.role != "weight" or dist is None or not dist.elementwise or dist.std <= 0:
        return None
    try:
        return _histogram(planned, values, dist)
    except Exception:
        log.warning("no histogram for %s", planned.name, exc_info=True)
        return None


def _histogram(planned: PlannedTensor, values: torch.Tensor, dist: d.Distribution) -> Histogram | None:
    low, high = law_range(dist)
    if not low < high:  # a spread float64 cannot resolve at this mean (1e300 + 4 == 1e300): no bins
        return None
    mass = _bin_mass(dist, low, high, planned.dtype)
    if mass is None:
        return None
    flat = values.detach().reshape(-1)
    x = flat[:: max(1, math.ceil(flat.numel() / SAMPLE))].to(torch.float64)
    x = x[~torch.isnan(x)]
    inside = x[(x >= low) & (x <= high)]
    counts = torch.bincount(_bin_index(inside, low, high), minlength=BINS)
    return Histogram(
        low=low,
        high=high,
        counts=[int(c) for c in counts.tolist()],
        expected=[round(m, 3) for m in (mass * x.numel()).tolist()],
        below=int((x < low).sum()),
        above=int((x > high).sum()),
        n=int(x.numel()),
    )


def law_range(dist: d.Distribution) -> tuple[float, float]:
    """[low, high] of the bins: mean ± SPAN std, within the law's support where it is bounded (a
    uniform's bins span its support; a normal truncated far out, e.g. at ±2 absolute with std 0.02,
    still gets bins around its bulk)."""
    low, high = dist.mean - SPAN * dist.std, dist.mean + SPAN * dist.std
    bounds = LAW_CHECKS.get(dist.family).bounds
    if bounds is None:
        return low, high
    support = bounds(dist)
    return max(low, support[0]), min(high, support[1])


def keep_largest(stats: Sequence[TensorStats], k: int = HISTOGRAMS) -> list[TensorStats]:
    """`stats` with the histograms of the k largest tensors that have one (by values measured; the
    first in order on a tie) and no others."""
    with_one = [i for i, s in enumerate(stats) if s.histogram is not None]
    kept = set(sorted(with_one, key=lambda i: (-_size(stats[i]), i))[:k])
    return [s if i in kept or s.histogram is None else s.model_copy(update={"histogram": None})
            for i, s in enumerate(stats)]  # fmt: skip


def _size(s: TensorStats) -> int:
    extent = [stop - start for start, stop in s.slice] if s.slice is not None else s.shape
    return math.prod(extent)


def _bin_index(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The bin of each value in [low, high]; the last bin is closed (holds `high`)."""
    return ((x - low) * (BINS / (high - low))).floor().long().clamp_(0, BINS - 1)


def _bin_mass(dist: d.Distribution, low: float, high: float, dtype: str) -> torch.Tensor | None:
    """The law's probability of each bin (float64, [BINS]), after rounding to `dtype` where that is
    coarse (float16, bfloat16); None where the report has no CDF for the law."""
    if DTYPES.get(dtype).low_precision:
        edges = _rounded_edges(low, high, dtype)
    else:
        edges = torch.linspace(low, high, BINS + 1, dtype=torch.float64)
    p = cdf(dist, edges)
    return None if p is None else p[1:] - p[:-1]


def _rounded_edges(low: float, high: float, dtype: str) -> torch.Tensor:
    """The reals whose rounding to `dtype` starts each bin (and ends the last): a bin holds a run of
    representable values, so its mass is the law's between the lower end of the first one's rounding
    interval and the upper end of the last one's. A bin no value falls in gets mass 0."""
    grid, lower, upper = _rounding_cells(dtype)
    first = int(torch.searchsorted(grid, low))  # the first value >= low
    stop = int(torch.searchsorted(grid, high, right=True))  # past the last value <= high
    bins = _bin_index(grid[first:stop], low, high)  # ascending, as the grid is
    starts = torch.searchsorted(bins, torch.arange(BINS + 1))  # the first value in bin k or after; BINS: the end
    ends = torch.cat([lower[first:stop], upper[stop - 1 : stop]])
    return ends[starts]


@functools.cache
def _rounding_cells(dtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every finite value of a 16-bit float dtype in float64, ascending, with the interval of reals
    that round to it: [lower, upper] between the midpoints to its neighbours (the ends unbounded)."""
    torch_dtype = getattr(torch, DTYPES.get(dtype).torch)
    values = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch_dtype).to(torch.float64)
    grid = torch.unique(values[torch.isfinite(values)])  # sorted; +0 and -0 are one value
    mid = (grid[1:] + grid[:-1]) / 2
    inf = torch.tensor([math.inf], dtype=torch.float64)
    return grid, torch.cat([-inf, mid]), torch.cat([mid, inf])
