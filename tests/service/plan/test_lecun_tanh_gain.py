"""LeCun's tanh, 1.7159 tanh(2x / 3): the gain auto and the explicit schemes use is the one that keeps
a unit-variance pre-activation at unit variance, recomputed here by quadrature and by sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from initium.schemas.schemes import KaimingNormal
from initium.service.plan.gain import LECUN_TANH_GAIN, calculate_gain
from initium.service.plan.schemes import Geometry, resolve


def _second_moment(activation: str) -> float:
    """E[f(z)^2], z ~ N(0, 1), by 200-point Gauss-Hermite quadrature (exact to double precision here)."""
    nodes, weights = hermegauss(200)
    values = 1.7159 * np.tanh(2.0 * nodes / 3.0) if activation == "lecun_tanh" else np.maximum(nodes, 0.0)
    return float((weights * values**2).sum() / weights.sum())


def test_the_gain_preserves_variance_through_the_activation() -> None:
    derived = 1 / math.sqrt(_second_moment("lecun_tanh"))
    assert derived == pytest.approx(LECUN_TANH_GAIN, rel=1e-14)
    # The same rule gives ReLU's sqrt(2), the value torch's table has.
    assert 1 / math.sqrt(_second_moment("relu")) == pytest.approx(calculate_gain("relu"), rel=1e-12)


def test_a_deep_lecun_tanh_chain_keeps_unit_variance_with_it() -> None:
    """20 layers of width 256 with kaiming_normal(nonlinearity='lecun_tanh'): pre-activations stay at
    variance 1 (measured 0.99), where LeCun normal's gain 1 lets them sink (to 0.36)."""
    generator = torch.Generator().manual_seed(0)
    n = 256
    params = KaimingNormal(scheme="kaiming_normal", nonlinearity="lecun_tanh")
    std = resolve(params, Geometry((n, n), fan_in=n, fan_out=n)).std
    assert std == pytest.approx(LECUN_TANH_GAIN / math.sqrt(n), rel=1e-15)

    def final_variance(scale: float) -> float:
        h = torch.randn(512, n, generator=generator, dtype=torch.float64)
        for _ in range(20):
            w = torch.randn(n, n, generator=generator, dtype=torch.float64) * scale
            h = (1.7159 * torch.tanh(h * (2.0 / 3.0))) @ w.T
        return float(h.var())

    assert final_variance(std) == pytest.approx(1.0, abs=0.1)
    assert final_variance(1 / math.sqrt(n)) < 0.5
