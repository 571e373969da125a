"""The recommended gain per nonlinearity: torch.nn.init.calculate_gain's table, plus LeCun's tanh."""

from __future__ import annotations

import math

_UNIT_GAIN = frozenset(
    {
        "linear", "conv1d", "conv2d", "conv3d",
        "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid",
    }
)  # fmt: skip


# LeCun's tanh, f(x) = 1.7159 tanh(2x / 3) (LeCun et al. 1998): the gain g that keeps a unit-variance
# pre-activation at unit variance one layer on. With z ~ N(0, 1) and weights of variance g^2 / fan_in,
# the next pre-activation has variance g^2 E[f(z)^2] (the variance map of Poole et al. 2016), so
# g = 1 / sqrt(E[f(z)^2]); E[f(z)^2] = 0.750430276305064 by Gauss-Hermite quadrature (the tests
# recompute it). The same rule gives relu sqrt(2) and linear 1 exactly, and tanh 1.5925 where torch's
# table has 5/3.
LECUN_TANH_GAIN = 1.1543694539761433


def calculate_gain(nonlinearity: str, negative_slope: float | None = None) -> float:
    """Return the gain that keeps activation variance stable through `nonlinearity`.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + negative_slope^2)) with slope 0.01 when None;
    selu: 3/4 (found empirically, pytorch/pytorch#50664); lecun_tanh: 1.1544 (LECUN_TANH_GAIN).
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if negative_slope is None else negative_slope
        # A float power raises OverflowError past 1e154 (a 500, issue 15); such a slope's gain is 0.
        square = slope**2 if abs(slope) < 1e150 else math.inf
        return math.sqrt(2.0 / (1 + square))
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity == "lecun_tanh":
        return LECUN_TANH_GAIN
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")
