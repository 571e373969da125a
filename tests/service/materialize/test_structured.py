"""The structured (whole-tensor) samplers write the law's values exactly in the file's dtype."""

from __future__ import annotations

import torch

from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d

CPU = torch.device("cpu")


def test_a_float64_identity_carries_its_gain_exactly() -> None:
    """gain 0.1 was written as float32(0.1) = 0.10000000149011612 in float64 files, 1e-300 as 0 and
    1e300 failed the job (issue 15); other dtypes keep the float32 gain they always had."""
    for gain in (0.1, 1e-300, 1e300):
        law = d.Eye(gain, 4, 4, tile=False, noise=0.0)
        values = sample(law, (4, 4), Stream((1, 1), CPU), dtype=torch.float64)
        assert torch.equal(values, gain * torch.eye(4, dtype=torch.float64))
    noisy = sample(d.Eye(1e300, 4, 4, tile=False, noise=1.0), (4, 4), Stream((1, 1), CPU), dtype=torch.float64)
    assert torch.equal(noisy.diagonal(), torch.full((4,), 1e300, dtype=torch.float64))
    single = sample(d.Eye(0.1, 4, 4, tile=False, noise=0.0), (4, 4), Stream((1, 1), CPU), dtype=torch.float32)
    assert single[0, 0].item() == torch.tensor(0.1, dtype=torch.float32).item()
