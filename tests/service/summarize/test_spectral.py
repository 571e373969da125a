"""Spectral statistics: torch's figures below the exact-SVD size; above it an estimate that never
overshoots and stays within its stated bound, on random, rank-deficient, constant and near-constant
matrices; nothing impossible (stable rank >= 1), and nothing that fails a job (issue 15)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from initium.schemas.request import InitRequest
from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.plan.planner import make_plan
from initium.service.summarize import report
from initium.service.summarize.spectral import EXACT_SVD_ELEMENTS, spectral

CPU = torch.device("cpu")


def _gaussian(shape: tuple[int, ...], loc: float = 0.0, scale: float = 0.02) -> torch.Tensor:
    return loc + scale * torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


def _low_rank(rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(rank)
    return torch.randn(700, rank, generator=g) @ torch.randn(rank, 400, generator=g)


def _truth(w: torch.Tensor) -> tuple[float, float]:
    """||W||_2 and the stable rank from float64 eigenvalues of the smaller Gram matrix."""
    w = w.double().reshape(w.shape[0], -1)
    top = float(torch.linalg.eigvalsh(w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T)[-1])
    return math.sqrt(top), float(w.square().sum()) / top


MATRICES: dict[str, Callable[[], torch.Tensor]] = {
    "gaussian 1024x512": lambda: _gaussian((1024, 512)),
    "gaussian 512x1024": lambda: _gaussian((512, 1024)),
    "gaussian 3000x96": lambda: _gaussian((3000, 96)),
    "gaussian bfloat16": lambda: _gaussian((640, 480)).to(torch.bfloat16),
    "conv 256x128x3x3": lambda: _gaussian((256, 128, 3, 3)),
    "rank one": lambda: torch.outer(torch.linspace(-1, 1, 700), torch.linspace(0.5, 2, 400)),
    "rank five": lambda: _low_rank(5),
    "constant 0.1": lambda: torch.full((640, 480), 0.1),
    "near-constant N(1, 1e-6)": lambda: _gaussian((640, 480), 1.0, 1e-6),
    "mean and noise": lambda: _gaussian((700, 400), 0.05),
    "orthogonal": lambda: 1.5 * torch.linalg.qr(_gaussian((700, 400)).double()).Q.float(),
}


@pytest.mark.parametrize("name", MATRICES)
def test_the_estimate_never_overshoots_and_keeps_its_bound(name: str) -> None:
    """Below the truth by float64 rounding at most, above truth / (1 + bound); the stable rank within
    [1, min(rows, cols)], never below the truth and at most (1 + bound)^2 above it."""
    w = MATRICES[name]()
    s, (norm, stable_rank) = spectral(w, None), _truth(w)
    assert s is not None and not s.exact and s.bound is not None and 0 < s.bound < 0.05
    assert s.spectral_norm is not None and s.stable_rank is not None
    assert s.spectral_norm <= norm * (1 + 1e-12) and norm <= s.spectral_norm * (1 + s.bound)
    assert s.spectral_norm == pytest.approx(norm, rel=2e-3)  # in practice far closer than the bound
    assert 1.0 <= s.stable_rank <= min(w.shape[0], w[0].numel())
    assert stable_rank * (1 - 1e-9) <= s.stable_rank <= stable_rank * (1 + s.bound) ** 2 + 1e-9
    assert s.condition_number is None and s.missing is not None and "condition number" in s.missing


def test_constant_matrices_report_their_exact_norm() -> None:
    """float32 Lanczos said 100.001 (stable rank 0.99998) for constant 0.1 [1000, 1000] and 179.427 for
    constant 0.1 [50257, 64], against c sqrt(rows cols) = 100 and 179.345, and failed the job on
    N(1, 1e-6) [1000, 1000] with "linalg.svd: ... non-finite values" (issue 15)."""
    c = float(torch.tensor(0.1, dtype=torch.float32))  # the value the tensor holds
    for shape in ((1000, 1000), (50257, 64)):
        s = spectral(torch.full(shape, 0.1), None)
        assert s is not None and s.spectral_norm == pytest.approx(c * math.sqrt(shape[0] * shape[1]), rel=1e-12)
        assert s.stable_rank is not None and 1.0 <= s.stable_rank <= 1.0 + 1e-12
    near = spectral(_gaussian((1000, 1000), 1.0, 1e-6), None)
    assert near is not None and near.spectral_norm == pytest.approx(1000.0, rel=1e-5)
    assert near.stable_rank is not None and 1.0 <= near.stable_rank <= 1.0 + 1e-9
    small = spectral(torch.full((300, 200), 0.1), None)  # the full SVD: rank one, so no condition number
    assert small is not None and small.exact and small.bound == 0.0 and small.stable_rank == 1.0
    assert small.spectral_norm == pytest.approx(c * math.sqrt(300 * 200), rel=1e-13)
    assert small.condition_number is None and small.missing is not None and "within rounding" in small.missing


def test_spectral_figures_are_torchs() -> None:
    w = _gaussian((300, 200), scale=1.0)
    s = spectral(w, None)
    sv = torch.linalg.svdvals(w)
    assert s is not None and s.exact and s.bound == 0.0 and s.missing is None
    assert s.spectral_norm == pytest.approx(float(sv[0])) and s.condition_number == pytest.approx(float(sv[0] / sv[-1]))
    assert s.stable_rank == pytest.approx(float((w * w).sum() / sv[0] ** 2))
    q = sample(d.Orthogonal(2.0, 64, 96), (64, 96), Stream((4, 4), CPU))
    orthogonal = spectral(q, d.Orthogonal(2.0, 64, 96))
    assert orthogonal is not None and orthogonal.orthogonality_error is not None
    assert orthogonal.orthogonality_error < 1e-12 and orthogonal.condition_number == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(300, 200), (1000, 600)])
def test_non_finite_values_make_the_spectrum_missing(shape: tuple[int, int]) -> None:
    for bad in (math.nan, math.inf):
        w = _gaussian(shape)
        w[3, 5] = bad
        s = spectral(w, None, float(w.nan_to_num(0.0, 0.0, 0.0).double().square().sum()))
        assert s is not None and s.spectral_norm is None and s.stable_rank is None and s.condition_number is None
        assert s.missing is not None and "NaN or Inf" in s.missing
    assert spectral(torch.zeros(shape), None) is None and spectral(torch.ones(shape[0]), None) is None


def test_a_failed_svd_falls_back_to_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(w: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("linalg.svd: The algorithm failed to converge")  # as torch's LinAlgError, a subclass

    w = _gaussian((300, 200))
    norm = float(torch.linalg.matrix_norm(w.double(), ord=2))
    monkeypatch.setattr(torch.linalg, "svdvals", fail)
    s = spectral(w, None)
    assert s is not None and not s.exact and s.spectral_norm == pytest.approx(norm, rel=2e-3)
    assert s.missing is not None and "full SVD failed" in s.missing


def test_a_statistic_that_raises_is_missing_and_the_tensor_still_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    body = {
        "spec": {"name": "one", "modules": [{"type": "linear", "name": "fc", "in_features": 30, "out_features": 20}]},
        "policy": {"rules": [{"match": {}, "init": {"scheme": "normal", "mean": 1.0, "std": 1e-6}}]},
        "seed": 1,
    }
    planned = make_plan(InitRequest.model_validate(body)).tensors[0]
    assert planned.name == "fc.weight" and EXACT_SVD_ELEMENTS > 600
    monkeypatch.setattr(report, "spectral", boom)
    monkeypatch.setattr(report, "fit", boom)
    stats = report.tensor_stats(planned, sample(d.Normal(1.0, 1e-6), (20, 30), Stream((1, 1), CPU)))
    assert stats.fit is None and stats.spectral is not None and stats.spectral.missing == "RuntimeError: boom"
    assert stats.spectral.spectral_norm is None and stats.std == pytest.approx(1e-6, rel=0.2)


def test_the_estimate_is_never_above_the_truth_by_rounding() -> None:
    """A stacked identity (true norm exactly 2) read 2.000000000000001."""
    w = torch.zeros(2000, 500)
    w[:500] = 2 * torch.eye(500)
    estimate = spectral(w, None)
    assert estimate is not None and not estimate.exact and estimate.spectral_norm is not None
    assert 2 * (1 - 1e-9) < estimate.spectral_norm <= 2.0
