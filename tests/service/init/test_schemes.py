"""Every scheme: its formula against torch.nn.init's, its samples against its own law (KS test).

Parametrized over the scheme registry; a new scheme without an example here fails the first test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from initium.schemas.schemes import SCHEME_MODELS
from initium.service.init import distributions as d
from initium.service.init.gain import calculate_gain
from initium.service.init.sampling import Stream, sample
from initium.service.init.schemes import Geometry, list_schemes, resolve

# Example params per scheme, chosen off the defaults so the parameters are really exercised.
EXAMPLES: dict[str, dict[str, Any]] = {
    "zeros": {},
    "ones": {},
    "constant": {"value": -0.25},
    "uniform": {"a": -0.5, "b": 1.5},
    "normal": {"mean": 0.3, "std": 0.7},
    "truncated_normal": {"mean": 0.1, "std": 0.5, "a": -0.4, "b": 0.9},
    "xavier_uniform": {"gain": 1.3},
    "xavier_normal": {"gain": 0.8},
    "kaiming_uniform": {"negative_slope": 0.2, "mode": "fan_out", "nonlinearity": "leaky_relu"},
    "kaiming_normal": {"nonlinearity": "relu"},
    "lecun_uniform": {},
    "lecun_normal": {},
    "orthogonal": {"gain": 2.0},
}
SHAPE = (160, 128)  # 20,480 elements: the KS test needs at least 10,000
GEOMETRY = Geometry(SHAPE, fan_in=128, fan_out=160)


def _params(name: str) -> Any:
    return SCHEME_MODELS[name].model_validate({"scheme": name, **EXAMPLES[name]})


def _draw(dist: d.Distribution, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> torch.Tensor:
    return sample(dist, shape, Stream((seed, 0x5EED), torch.device("cpu")))


def test_registry_and_wire_models_agree() -> None:
    assert sorted(list_schemes()) == sorted(SCHEME_MODELS) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", list_schemes())
def test_samples_follow_the_schemes_own_law(name: str) -> None:
    dist = resolve(_params(name), GEOMETRY)
    x = _draw(dist).numpy().ravel()
    assert np.isfinite(x).all()
    if isinstance(dist, d.Constant):
        assert (x == dist.value).all()
        return
    if isinstance(dist, d.Orthogonal):
        w = x.reshape(SHAPE)
        gram = w.T @ w  # tall: columns are orthonormal times gain
        assert np.allclose(gram, dist.gain**2 * np.eye(SHAPE[1]), atol=1e-10)
        assert w.std() == pytest.approx(dist.std, rel=0.01)
        return
    reference = _scipy_law(dist)
    assert stats.kstest(x, reference.cdf).pvalue > 1e-4
    # The moments the report promises are the law's own (checked against scipy's numbers).
    assert dist.mean == pytest.approx(reference.mean(), abs=1e-12)
    assert dist.std == pytest.approx(reference.std(), rel=1e-9)
    assert x.std() == pytest.approx(dist.std, rel=0.03)


def _scipy_law(dist: d.Distribution) -> Any:
    if isinstance(dist, d.Uniform):
        return stats.uniform(dist.low, dist.high - dist.low)
    if isinstance(dist, d.Normal):
        return stats.norm(dist.loc, dist.scale)
    assert isinstance(dist, d.TruncatedNormal)
    a, b = (dist.low - dist.loc) / dist.scale, (dist.high - dist.loc) / dist.scale
    return stats.truncnorm(a, b, loc=dist.loc, scale=dist.scale)


@pytest.mark.parametrize(
    ("name", "torch_init"),
    [
        ("xavier_uniform", lambda t: torch.nn.init.xavier_uniform_(t, gain=1.3)),
        ("xavier_normal", lambda t: torch.nn.init.xavier_normal_(t, gain=0.8)),
        ("kaiming_uniform", lambda t: torch.nn.init.kaiming_uniform_(t, a=0.2, mode="fan_out")),
        ("kaiming_normal", lambda t: torch.nn.init.kaiming_normal_(t, nonlinearity="relu")),
        ("lecun_uniform", lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="linear")),
        ("uniform", lambda t: torch.nn.init.uniform_(t, -0.5, 1.5)),
        ("normal", lambda t: torch.nn.init.normal_(t, 0.3, 0.7)),
    ],
)
def test_same_law_as_torch_nn_init(name: str, torch_init: Any) -> None:
    """Two-sample KS: our values and torch.nn.init's on the same shape come from one distribution."""
    theirs = torch_init(torch.empty(SHAPE, dtype=torch.float64)).numpy().ravel()
    ours = _draw(resolve(_params(name), GEOMETRY)).numpy().ravel()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4


def test_lecun_normal_has_variance_one_over_fan_in() -> None:
    dist = resolve(_params("lecun_normal"), GEOMETRY)
    assert dist.std == pytest.approx(math.sqrt(1 / 128), rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (20, 2, 3, 4), (2, 3, 4, 5)])
def test_orthogonal_shapes_like_torch(shape: tuple[int, ...]) -> None:
    rows, cols = shape[0], math.prod(shape[1:])
    dist = resolve(_params("orthogonal"), Geometry(shape, 1, 1))
    w = _draw(dist, shape).reshape(rows, cols)
    gram = w @ w.T if rows < cols else w.T @ w
    assert torch.allclose(gram, 4.0 * torch.eye(min(rows, cols), dtype=torch.float64), atol=1e-12)


def test_orthogonal_is_haar_not_biased_by_qr_signs() -> None:
    """Without the sign fix Q's diagonal is biased positive; Haar Q has mean diagonal ~0."""
    diagonals = [_draw(d.Orthogonal(1.0, 8, 8), (8, 8), seed).diagonal().mean().item() for seed in range(300)]
    assert abs(float(np.mean(diagonals))) < 0.03


@pytest.mark.parametrize(
    ("nonlinearity", "slope"),
    [(n, None) for n in ("linear", "conv2d", "sigmoid", "tanh", "relu", "selu", "leaky_relu")]
    + [("leaky_relu", 0.2), ("leaky_relu", 10.0)],
)
def test_gain_table_is_torchs(nonlinearity: str, slope: float | None) -> None:
    assert calculate_gain(nonlinearity, slope) == torch.nn.init.calculate_gain(nonlinearity, slope)


def test_truncated_normal_far_right_tail_stays_exact() -> None:
    dist = d.TruncatedNormal(0.0, 1.0, 6.0, 7.0)
    x = _draw(dist, (20_000,)).numpy()
    assert x.min() >= 6.0 and x.max() <= 7.0
    assert stats.kstest(x, stats.truncnorm(6, 7).cdf).pvalue > 1e-4
