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


def axes_fans(shape: tuple[int, ...], in_axes: list[int], out_axes: list[int]) -> tuple[int, int]:
    """Fans from named axes (Keras input_axes/output_axes, JAX in_axis/out_axis); the other
    dimensions form the receptive field that multiplies both."""
    ndim = len(shape)
    if any(not -ndim <= a < ndim for a in (*in_axes, *out_axes)):
        raise ValueError(f"axes {in_axes} and {out_axes} do not all exist in a {ndim}-D tensor of shape {list(shape)}")
    ins, outs = {a % ndim for a in in_axes}, {a % ndim for a in out_axes}
    if len(ins) != len(in_axes) or len(outs) != len(out_axes) or ins & outs:
        raise ValueError(f"in_axes {in_axes} and out_axes {out_axes} must be distinct axes")
    receptive = math.prod(n for i, n in enumerate(shape) if i not in ins | outs)
    return math.prod(shape[i] for i in ins) * receptive, math.prod(shape[i] for i in outs) * receptive
