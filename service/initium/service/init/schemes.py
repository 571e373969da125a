"""Every init scheme: paper, formula, and the distribution it resolves to for one tensor.

A scheme is a pure function (params, geometry) -> Distribution; the worker samples that
distribution and the report's expected moments are read off it, so both come from one formula.
Fans follow torch.nn.init._calculate_fan_in_and_fan_out (see initium.service.plan.fans).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from initium.schemas import schemes as wire
from initium.service.init.distributions import (
    Constant,
    Distribution,
    Normal,
    Orthogonal,
    TruncatedNormal,
    Uniform,
)
from initium.service.init.gain import calculate_gain
from initium.service.registry import Registry

# std of N(0, 1) truncated to (-2, 2): dividing by it makes a +-2 std truncated normal keep the
# requested variance, as Keras and JAX variance_scaling do (keras-team/keras#8048).
TRUNCATED_STD_CORRECTION = 0.87962566103423978


@dataclass(frozen=True)
class Geometry:
    """What a scheme may know about its tensor: the shape and the fans the planner derived."""

    shape: tuple[int, ...]
    fan_in: int
    fan_out: int


class SchemeNotApplicableError(ValueError):
    """The scheme cannot initialize a tensor of this shape (orthogonal on a vector, ...)."""


SchemeFn = Callable[[Any, Geometry], Distribution]
P = TypeVar("P")
_SCHEMES: Registry[SchemeFn] = Registry("scheme")


def register_scheme(
    name: str,
) -> Callable[[Callable[[P, Geometry], Distribution]], Callable[[P, Geometry], Distribution]]:
    return _SCHEMES.register(name)


def get_scheme(name: str) -> SchemeFn:
    return _SCHEMES.get(name)


def list_schemes() -> list[str]:
    return _SCHEMES.names()


def resolve(params: wire.SchemeParams, geometry: Geometry) -> Distribution:
    """The distribution `params` asks for on a tensor of this geometry."""
    return get_scheme(params.scheme)(params, geometry)


def _fan(geometry: Geometry, mode: str) -> int:
    return geometry.fan_in if mode == "fan_in" else geometry.fan_out


@register_scheme("zeros")
def zeros(p: wire.Zeros, g: Geometry) -> Distribution:
    """Fill with 0."""
    return Constant(0.0)


@register_scheme("ones")
def ones(p: wire.Ones, g: Geometry) -> Distribution:
    """Fill with 1."""
    return Constant(1.0)


@register_scheme("constant")
def constant(p: wire.Constant, g: Geometry) -> Distribution:
    """Fill with `value`."""
    return Constant(p.value)


@register_scheme("uniform")
def uniform(p: wire.Uniform, g: Geometry) -> Distribution:
    r"""Draw from U(a, b): mean (a + b) / 2, std (b - a) / \sqrt{12}."""
    return Uniform(p.a, p.b)


@register_scheme("normal")
def normal(p: wire.Normal, g: Geometry) -> Distribution:
    """Draw from N(mean, std^2)."""
    return Normal(p.mean, p.std)


@register_scheme("truncated_normal")
def truncated_normal(p: wire.TruncatedNormal, g: Geometry) -> Distribution:
    """Draw from N(mean, std^2) conditioned on a <= x <= b (absolute bounds, as torch's trunc_normal_).

    The realised std is below `std` unless [a, b] is wide: with the defaults (-2, 2) and std 1 it
    is 0.8796; the plan shows the exact value.
    """
    return TruncatedNormal(p.mean, p.std, p.a, p.b)


@register_scheme("xavier_uniform")
def xavier_uniform(p: wire.XavierUniform, g: Geometry) -> Distribution:
    r"""Glorot, X. and Bengio, Y. (2010), Understanding the difficulty of training deep feedforward networks.

    U(-a, a) with a = gain \cdot \sqrt{6 / (fan_in + fan_out)}.
    """
    bound = p.gain * math.sqrt(6.0 / (g.fan_in + g.fan_out))
    return Uniform(-bound, bound)


@register_scheme("xavier_normal")
def xavier_normal(p: wire.XavierNormal, g: Geometry) -> Distribution:
    r"""Glorot, X. and Bengio, Y. (2010): N(0, std^2), std = gain \cdot \sqrt{2 / (fan_in + fan_out)}."""
    return Normal(0.0, p.gain * math.sqrt(2.0 / (g.fan_in + g.fan_out)))


@register_scheme("kaiming_uniform")
def kaiming_uniform(p: wire.KaimingUniform, g: Geometry) -> Distribution:
    r"""He, K. et al. (2015), Delving deep into rectifiers.

    U(-bound, bound), bound = gain \cdot \sqrt{3 / fan_mode}, gain = calculate_gain(nonlinearity, negative_slope).
    """
    gain = calculate_gain(p.nonlinearity, p.negative_slope)
    bound = gain * math.sqrt(3.0 / _fan(g, p.mode))
    return Uniform(-bound, bound)


@register_scheme("kaiming_normal")
def kaiming_normal(p: wire.KaimingNormal, g: Geometry) -> Distribution:
    r"""He, K. et al. (2015): N(0, std^2), std = gain / \sqrt{fan_mode}."""
    gain = calculate_gain(p.nonlinearity, p.negative_slope)
    return Normal(0.0, gain / math.sqrt(_fan(g, p.mode)))


@register_scheme("lecun_uniform")
def lecun_uniform(p: wire.LecunUniform, g: Geometry) -> Distribution:
    r"""LeCun, Y. et al. (1998), Efficient BackProp: U(-a, a), a = \sqrt{3 / fan_in} (variance 1 / fan_in)."""
    bound = math.sqrt(3.0 / g.fan_in)
    return Uniform(-bound, bound)


@register_scheme("lecun_normal")
def lecun_normal(p: wire.LecunNormal, g: Geometry) -> Distribution:
    r"""LeCun, Y. et al. (1998), as Keras, JAX and Flax define it: variance exactly 1 / fan_in.

    Truncated normal at +-2 sigma with sigma = \sqrt{1 / fan_in} / 0.87962566103423978, so the
    truncation does not shrink the variance (keras-team/keras#8048).
    """
    sigma = math.sqrt(1.0 / g.fan_in) / TRUNCATED_STD_CORRECTION
    return TruncatedNormal(0.0, sigma, -2 * sigma, 2 * sigma)


@register_scheme("orthogonal")
def orthogonal(p: wire.Orthogonal, g: Geometry) -> Distribution:
    """Saxe, A. et al. (2013), Exact solutions to the nonlinear dynamics of learning in deep linear networks.

    W = gain * Q on the [shape[0], prod(shape[1:])] view, Q Haar-distributed (Mezzadri 2007: QR of a
    Gaussian matrix with the signs of diag(R) folded into Q); rows orthonormal when wide, columns
    when tall. Every entry has mean 0 and RMS gain / sqrt(max(rows, cols)).
    """
    if len(g.shape) < 2:
        raise SchemeNotApplicableError(
            f"orthogonal needs a tensor with 2 or more dimensions, got shape {list(g.shape)}"
        )
    rows = g.shape[0]
    cols = math.prod(g.shape[1:])
    return Orthogonal(p.gain, rows, cols)
