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
from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.plan.gain import calculate_gain
from initium.service.plan.schemes import Geometry, SchemeNotApplicableError, list_schemes, resolve

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
    "variance_scaling": {"scale": 2.0, "mode": "fan_avg", "distribution": "truncated_normal"},
    "torch_default": {},
    "eye": {"gain": 0.5},
    "dirac": {"groups": 2},
    "delta_orthogonal": {"gain": 1.5},
    "sparse": {"sparsity": 0.25, "std": 0.3},
    "looks_linear": {"gain": 1.0},
    "random_walk": {"nonlinearity": "relu"},
    "identity_plus_noise": {"gain": 1.0, "std": 0.05},
    "scaled_normal": {"std": 0.02},
    "depth_scaled_normal": {"std": 0.02},
    "fixup": {},
    "t_fixup": {"stack": "decoder"},
    "mup": {"base_fan_in": 64, "std": 0.05},
    "t5": {"factor": 0.5, "query": True},
    "relu_bias": {"value": 0.1},
    "auto": {},
}
SHAPE = (160, 128)  # 20,480 elements: the KS test needs at least 10,000
GEOMETRY = Geometry(SHAPE, fan_in=128, fan_out=160, module_type="linear")
# Schemes that need another shape: conv kernels [out, in, *k], square recurrent blocks.
GEOMETRIES = {
    "dirac": Geometry((32, 16, 3, 4), fan_in=192, fan_out=384, module_type="conv2d", groups=2),
    "delta_orthogonal": Geometry((64, 48, 3, 3), fan_in=432, fan_out=576, module_type="conv2d"),
    "identity_plus_noise": Geometry((384, 128), fan_in=128, fan_out=384, module_type="linear"),
    "scaled_normal": Geometry(SHAPE, 128, 160, "linear", ("weight", "residual_output"), n_blocks=12, depth=3),
    "depth_scaled_normal": Geometry(SHAPE, 128, 160, "linear", n_blocks=12, depth=3),
    "fixup": Geometry(SHAPE, 128, 160, "linear", residual_branches=8, branch_layers=3, branch_index=0),
    "t_fixup": Geometry(SHAPE, 128, 160, "linear", ("weight", "value"), n_blocks=6),
    "relu_bias": Geometry((20480,), 128, 160, "linear", ("bias",), followed_by="relu"),
    "t5": Geometry(SHAPE, 128, 160, "linear", ("weight", "query"), head_dim=16),
    "auto": Geometry(SHAPE, 128, 160, "linear", followed_by="leaky_relu(negative_slope=0.2)"),
}


def _params(name: str) -> Any:
    return SCHEME_MODELS[name].model_validate({"scheme": name, **EXAMPLES[name]})


def _geometry(name: str) -> Geometry:
    return GEOMETRIES.get(name, GEOMETRY)


def _draw(dist: d.Distribution, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> torch.Tensor:
    return sample(dist, shape, Stream((seed, 0x5EED), torch.device("cpu")))


def test_registry_and_wire_models_agree() -> None:
    assert sorted(list_schemes()) == sorted(SCHEME_MODELS) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", list_schemes())
def test_samples_follow_the_schemes_own_law(name: str) -> None:
    geometry = _geometry(name)
    dist = resolve(_params(name), geometry)
    w = _draw(dist, geometry.shape).numpy()
    assert np.isfinite(w).all()
    # Whatever the law, the moments the plan and report promise are what the tensor holds.
    assert w.mean() == pytest.approx(dist.mean, abs=0.03 * max(dist.std, 1e-12) + 1e-12)
    assert w.std() == pytest.approx(dist.std, rel=0.03, abs=1e-12)
    CHECKS.get(type(dist), _check_ks)(dist, w)


def _check_ks(dist: d.Distribution, w: np.ndarray) -> None:
    reference = _scipy_law(dist)
    assert stats.kstest(w.ravel(), reference.cdf).pvalue > 1e-4
    assert dist.mean == pytest.approx(reference.mean(), abs=1e-12)
    assert dist.std == pytest.approx(reference.std(), rel=1e-9)


def _check_constant(dist: d.Constant, w: np.ndarray) -> None:
    assert (w == dist.value).all()


def _check_orthogonal(dist: d.Orthogonal, w: np.ndarray) -> None:
    w = w.reshape(dist.rows, dist.cols)
    gram = w.T @ w if dist.rows >= dist.cols else w @ w.T
    assert np.allclose(gram, dist.gain**2 * np.eye(min(dist.rows, dist.cols)), atol=1e-10)


def _check_eye(dist: d.Eye, w: np.ndarray) -> None:
    rows, cols = np.indices(w.shape)
    pattern = np.where((rows % dist.cols == cols) if dist.tile else (rows == cols), dist.gain, 0.0)
    noise = w - pattern
    if dist.noise == 0:
        assert (noise == 0).all()
    else:
        assert stats.kstest(noise.ravel(), "norm", args=(0, dist.noise)).pvalue > 1e-4


def _check_dirac(dist: d.Dirac, w: np.ndarray) -> None:
    expected = torch.nn.init.dirac_(torch.empty(w.shape, dtype=torch.float64), groups=dist.groups)
    assert np.array_equal(w, expected.numpy())


def _check_delta_orthogonal(dist: d.DeltaOrthogonal, w: np.ndarray) -> None:
    taps = w.reshape(dist.out_channels, dist.in_channels, dist.kernel)
    h = taps[:, :, dist.centre]
    assert np.allclose(h.T @ h, dist.gain**2 * np.eye(dist.in_channels), atol=1e-10)
    assert (np.delete(taps, dist.centre, axis=2) == 0).all()


def _check_sparse(dist: d.Sparse, w: np.ndarray) -> None:
    assert ((w == 0).sum(axis=0) == dist.zeros).all()
    assert stats.kstest(w[w != 0], "norm", args=(0, dist.scale)).pvalue > 1e-4


def _check_looks_linear(dist: d.LooksLinear, w: np.ndarray) -> None:
    half = w.shape[1] // 2
    assert np.array_equal(w[:, half:], -w[:, :half])
    w0 = w[:, :half].reshape(dist.rows, dist.half_cols)
    gram = w0.T @ w0 if dist.rows >= dist.half_cols else w0 @ w0.T
    assert np.allclose(gram, dist.gain**2 * np.eye(min(dist.rows, dist.half_cols)), atol=1e-10)


CHECKS: dict[type, Any] = {
    d.Constant: _check_constant,
    d.Orthogonal: _check_orthogonal,
    d.Eye: _check_eye,
    d.Dirac: _check_dirac,
    d.DeltaOrthogonal: _check_delta_orthogonal,
    d.Sparse: _check_sparse,
    d.LooksLinear: _check_looks_linear,
}


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


@pytest.mark.parametrize(
    ("params", "expected_std"),
    [
        ({"mode": "fan_in", "distribution": "untruncated_normal"}, math.sqrt(1 / 128)),
        ({"mode": "fan_out", "distribution": "uniform", "scale": 3.0}, math.sqrt(3 / 160)),
        ({"mode": "fan_avg", "distribution": "truncated_normal", "scale": 2.0}, math.sqrt(2 / 144)),
    ],
)
def test_variance_scaling_keeps_the_asked_variance(params: dict[str, Any], expected_std: float) -> None:
    dist = resolve(SCHEME_MODELS["variance_scaling"].model_validate({"scheme": "variance_scaling", **params}), GEOMETRY)
    assert dist.std == pytest.approx(expected_std, rel=1e-12)


def test_truncated_normal_bounds_in_std_units_match_timm_tf_variant() -> None:
    params = SCHEME_MODELS["truncated_normal"].model_validate(
        {"scheme": "truncated_normal", "mean": 1.0, "std": 0.02, "a": -2, "b": 2, "bounds": "std"}
    )
    dist = resolve(params, GEOMETRY)
    assert isinstance(dist, d.TruncatedNormal) and (dist.low, dist.high) == (0.96, 1.04)
    assert dist.std == pytest.approx(0.02 * 0.87962566103423978, rel=1e-9)


@pytest.mark.parametrize(
    ("module", "geometry_args"),
    [
        (lambda: torch.nn.Linear(128, 160).weight, ((160, 128), 128, 160, "linear", "weight")),
        (lambda: torch.nn.Linear(128, 16000).bias, ((16000,), 128, 16000, "linear", "bias")),
        (lambda: torch.nn.Conv2d(16, 64, 5).weight, ((64, 16, 5, 5), 400, 1600, "conv2d", "weight")),
        (lambda: torch.nn.Embedding(200, 64).weight, ((200, 64), 64, 200, "embedding", "weight")),
    ],
)
def test_torch_default_is_what_torch_modules_draw(module: Any, geometry_args: tuple[Any, ...]) -> None:
    theirs = torch.cat([module().detach().double().ravel() for _ in range(4)]).numpy()
    dist = resolve(_params("torch_default"), Geometry(*geometry_args))
    ours = _draw(dist, geometry_args[0]).numpy().ravel()
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-4


def test_torch_default_norms_and_unknown_types() -> None:
    weight = resolve(_params("torch_default"), Geometry((8,), 8, 8, "layer_norm", "weight"))
    bias = resolve(_params("torch_default"), Geometry((8,), 8, 8, "batch_norm2d", "bias"))
    assert (weight, bias) == (d.Constant(1.0), d.Constant(0.0))
    with pytest.raises(SchemeNotApplicableError, match="does not know module type"):
        resolve(_params("torch_default"), Geometry((8,), 8, 8, "mystery", "weight"))


@pytest.mark.parametrize("kernel", [(3,), (4,), (3, 4), (2, 2, 2)])
def test_delta_orthogonal_centre_differs_from_dirac_only_for_even_kernels(kernel: tuple[int, ...]) -> None:
    shape = (8, 8, *kernel)
    delta = resolve(_params("delta_orthogonal"), Geometry(shape, 1, 1))
    identity = resolve(_params("dirac"), Geometry(shape, 1, 1))
    assert isinstance(delta, d.DeltaOrthogonal) and isinstance(identity, d.Dirac)
    assert (delta.centre == identity.centre) == all(k % 2 for k in kernel)


@pytest.mark.parametrize(
    ("name", "shape", "fragment"),
    [
        ("eye", (4, 4, 3), "2-D"),
        ("dirac", (4, 4), "3-D or 4-D or 5-D"),
        ("delta_orthogonal", (4, 8, 3), "out_channels >= in_channels"),
        ("sparse", (4, 4, 4), "2-D"),
        ("looks_linear", (4, 5), "even input dimension"),
        ("identity_plus_noise", (5, 4), "multiple of columns"),
    ],
)
def test_structural_schemes_refuse_shapes_they_cannot_fill(name: str, shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(SchemeNotApplicableError, match=fragment):
        resolve(_params(name), Geometry(shape, 1, 1))
