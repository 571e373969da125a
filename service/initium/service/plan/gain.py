"""The recommended gain per nonlinearity, exactly torch.nn.init.calculate_gain's table."""

from __future__ import annotations

import math

_UNIT_GAIN = frozenset(
    {
        "linear", "conv1d", "conv2d", "conv3d",
        "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid",
    }
)  # fmt: skip


def calculate_gain(nonlinearity: str, negative_slope: float | None = None) -> float:
    """Return the gain that keeps activation variance stable through `nonlinearity`.

    linear, conv*, sigmoid: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + negative_slope^2)) with slope 0.01 when None;
    selu: 3/4 (found empirically, pytorch/pytorch#50664).
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if negative_slope is None else negative_slope
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")
