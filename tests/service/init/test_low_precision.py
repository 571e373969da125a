"""float16 and bfloat16 outputs: in bounds, finite, and not collapsed onto a few values."""

from __future__ import annotations

import pytest
import torch

from initium.service.init import distributions as d
from initium.service.init.sampling import Stream, sample

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
