"""random_walk (Sussillo and Abbott 2014): the published gains, and that they do what the paper says,
an unbiased walk of the back-propagated gradient's log-norm, checked against exact expectations."""

from __future__ import annotations

import math

import pytest
from scipy.special import digamma
from scipy.stats import binom

from initium.schemas.schemes import RandomWalk
from initium.service.plan import distributions as d
from initium.service.plan.schemes import Geometry, resolve


def _gain(nonlinearity: str, n: int) -> float:
    params = RandomWalk.model_validate({"scheme": "random_walk", "nonlinearity": nonlinearity})
    dist = resolve(params, Geometry((7, n), fan_in=n, fan_out=7))
    assert isinstance(dist, d.Normal) and dist.mean == 0.0
    return dist.std * math.sqrt(n)


@pytest.mark.parametrize(
    ("nonlinearity", "n", "gain"),
    [
        ("linear", 100, math.exp(1 / 200)),
        ("relu", 100, math.sqrt(2) * math.exp(1.2 / 97.6)),
        ("relu", 3, math.sqrt(2) * math.exp(1.2 / 3.6)),  # max(N, 6): the fit's pole at N = 2.4 stays away
        ("tanh", 100, 1.13),
        ("tanh", 7, 1.13),
    ],
)
def test_the_published_gain_per_network_type(nonlinearity: str, n: int, gain: float) -> None:
    assert _gain(nonlinearity, n) == pytest.approx(gain, rel=1e-15)


def _log_norm_step(g: float, n: int, active: float) -> float:
    """E[log |W^T D delta| - log |delta|] for W ~ N(0, g^2 / n) [n, n] and delta isotropic Gaussian:
    |W^T v|^2 = g^2 / n |v|^2 chi^2_n exactly, and D keeps K ~ Binomial(n, active) coordinates, whose
    share of |delta|^2 is Beta(K / 2, (n - K) / 2), E[log Beta(a, b)] = psi(a) - psi(a + b)."""
    chi = 0.5 * (float(digamma(n / 2)) - math.log(n / 2))
    if active == 1.0:
        return math.log(g) + chi
    ks = range(1, n + 1)  # K = 0 (probability 2^-n) has no gradient to walk
    kept = sum(float(binom.pmf(k, n, active) * (digamma(k / 2) - digamma(n / 2))) for k in ks) / (1 - (1 - active) ** n)
    return math.log(g) + chi + 0.5 * kept


@pytest.mark.parametrize("n", [10, 20, 50, 100, 500])
def test_the_gains_make_the_walk_unbiased(n: int) -> None:
    """The bias per layer with the paper's g is under 5% of the usual gain's (1 for linear networks,
    He's sqrt(2) for ReLU ones, where half the units pass the gradient)."""
    linear, usual_linear = _log_norm_step(_gain("linear", n), n, 1.0), _log_norm_step(1.0, n, 1.0)
    relu, usual_relu = _log_norm_step(_gain("relu", n), n, 0.5), _log_norm_step(math.sqrt(2), n, 0.5)
    assert usual_linear < 0 and abs(linear) < 0.05 * abs(usual_linear)
    assert usual_relu < 0 and abs(relu) < 0.05 * abs(usual_relu)
