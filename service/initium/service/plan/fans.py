"""fan_in and fan_out, the way torch.nn.init._calculate_fan_in_and_fan_out computes them."""

from __future__ import annotations

import math


def torch_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in = size(1) * receptive field, fan_out = size(0) * receptive field, for >= 2-D weights.

    Layouts are torch's: Linear [out, in], ConvNd [out, in / groups, *k], Embedding [num, dim].
    As in torch, grouped convs count fan_out over all groups (pytorch/pytorch#23854).
    """
    if len(shape) < 2:
        raise ValueError(f"fans need a tensor with 2 or more dimensions, got shape {list(shape)}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field
