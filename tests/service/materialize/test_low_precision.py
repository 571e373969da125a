"""float16 and bfloat16 outputs: in bounds, finite, and not collapsed onto a few values."""

from __future__ import annotations

import pytest
import torch

from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.plan.schemes import list_schemes, resolve
from tests.service.plan.test_schemes import _geometry, _params

# Unique-value floors from torch's test_trunc_normal_unique_values (10,000 draws).
MIN_UNIQUE = {torch.float16: 3000, torch.bfloat16: 1000}
LAWS = {
    "normal": d.Normal(0.0, 1.0),
    "uniform": d.Uniform(-2.0, 2.0),
    "truncated_normal": d.TruncatedNormal(0.0, 1.0, -2.0, 2.0),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("law", sorted(LAWS))
def test_low_precision_draws(dtype: torch.dtype, law: str) -> None:
    dist = LAWS[law]
    x = sample(dist, (10_000,), Stream((3, 3), torch.device("cpu"))).to(dtype)
    assert torch.isfinite(x).all()
    assert x.unique().numel() > MIN_UNIQUE[dtype]
    if isinstance(dist, (d.Uniform, d.TruncatedNormal)):
        assert x.min().item() >= dist.low and x.max().item() <= dist.high


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list_schemes())
def test_every_scheme_in_low_precision(dtype: torch.dtype, name: str) -> None:
    """Finite, inside the law's bounds after rounding, and (for continuous laws) not collapsed."""
    geometry = _geometry(name)
    dist = resolve(_params(name), geometry)
    x = sample(dist, geometry.shape, Stream((5, 5), torch.device("cpu"))).to(dtype)
    assert torch.isfinite(x).all()
    if isinstance(dist, (d.Uniform, d.TruncatedNormal)):
        # As torch's own test does: the bounds themselves round to the dtype first.
        low, high = (torch.tensor(b, dtype=torch.float64).to(dtype).item() for b in (dist.low, dist.high))
        assert x.min().item() >= low and x.max().item() <= high
    if isinstance(dist, (d.Normal, d.Uniform, d.TruncatedNormal, d.Orthogonal)) and dist.std > 0:
        assert x.unique().numel() > MIN_UNIQUE[dtype] * x.numel() / 20_480 / 2
