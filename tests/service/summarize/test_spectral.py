"""Spectral statistics: torch's figures below the exact-SVD size, a close Lanczos estimate above it."""

from __future__ import annotations

import pytest
import torch

from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.summarize.spectral import spectral

CPU = torch.device("cpu")


def test_spectral_figures_are_torchs() -> None:
    w = sample(d.Normal(0.0, 1.0), (300, 200), Stream((2, 2), CPU))
    s = spectral(w, None)
    sv = torch.linalg.svdvals(w)
    assert s is not None and s.exact
    assert s.spectral_norm == pytest.approx(float(sv[0])) and s.condition_number == pytest.approx(float(sv[0] / sv[-1]))
    assert s.stable_rank == pytest.approx(float((w * w).sum() / sv[0] ** 2))
    big = sample(d.Normal(0.0, 1.0), (2048, 1024), Stream((3, 3), CPU))
    approx = spectral(big, None)
    assert approx is not None and not approx.exact and approx.condition_number is None
    assert approx.spectral_norm == pytest.approx(float(torch.linalg.matrix_norm(big, ord=2)), rel=2e-3)
    q = sample(d.Orthogonal(2.0, 64, 96), (64, 96), Stream((4, 4), CPU))
    orthogonal = spectral(q, d.Orthogonal(2.0, 64, 96))
    assert orthogonal is not None and orthogonal.orthogonality_error is not None
    assert orthogonal.orthogonality_error < 1e-12 and orthogonal.condition_number == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(1024, 512), (512, 1024), (3000, 96)])
def test_the_lanczos_estimate_is_close_and_survives_breakdown(shape: tuple[int, int]) -> None:
    w = sample(d.Normal(0.0, 0.02), shape, Stream((6, 6), CPU))
    estimate = spectral(w, None)
    assert estimate is not None and not estimate.exact
    assert estimate.spectral_norm == pytest.approx(float(torch.linalg.matrix_norm(w.double(), ord=2)), rel=2e-3)
    # Rank one and orthogonal: the bidiagonalization stops early (beta or alpha 0) with the exact value.
    a, b = torch.linspace(-1, 1, shape[0]), torch.linspace(0.5, 2, shape[1])
    rank_one = spectral(torch.outer(a, b), None)
    assert rank_one is not None and rank_one.spectral_norm == pytest.approx(float(a.norm() * b.norm()), rel=1e-5)
    law = d.Orthogonal(1.5, *shape)
    orthogonal = spectral(sample(law, shape, Stream((7, 7), CPU)), law)
    assert orthogonal is not None and orthogonal.spectral_norm == pytest.approx(1.5, rel=1e-5)
    assert spectral(torch.zeros(shape), None) is None
