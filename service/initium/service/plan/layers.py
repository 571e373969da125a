"""Layer types: each is a pure function from its spec to the tensors torch's state_dict holds for it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from initium.schemas import spec as s
from initium.schemas.plan import Role
from initium.service.plan.fans import torch_fans
from initium.service.registry import Registry


@dataclass(frozen=True)
class LayerTensor:
    """One state_dict entry of a layer, named relative to the layer."""

    local_name: str
    shape: tuple[int, ...]
    role: Role
    fan_in: int
    fan_out: int
    # Buffers are not parameters: they start at torch's fixed value and no rule touches them.
    buffer_value: float | None = None
    integer: bool = False
    post: tuple[str, ...] = field(default_factory=tuple)
    # Conv groups: torch's fan_out counts all of them; the initium convention divides by them.
    groups: int = 1


LayerFn = Callable[[Any], list[LayerTensor]]
_LAYERS: Registry[LayerFn] = Registry("module type")


def register_layer(*names: str) -> Callable[[LayerFn], LayerFn]:
    def add(fn: LayerFn) -> LayerFn:
        for name in names:
            _LAYERS.register(name)(fn)
        return fn

    return add


def get_layer(name: str) -> LayerFn:
    return _LAYERS.get(name)


def list_layers() -> list[str]:
    return _LAYERS.names()


def _weight_and_bias(
    weight: tuple[int, ...], bias: bool, post: tuple[str, ...] = (), groups: int = 1
) -> list[LayerTensor]:
    # A bias has no fans of its own; it takes its layer's, as torch's default bias bound
    # 1/sqrt(fan_in) does, so fan-based schemes scale it like the weight it belongs to.
    fan_in, fan_out = torch_fans(weight)
    tensors = [LayerTensor("weight", weight, "weight", fan_in, fan_out, post=post, groups=groups)]
    if bias:
        tensors.append(LayerTensor("bias", (weight[0],), "bias", fan_in, fan_out, groups=groups))
    return tensors


@register_layer("linear")
def linear(m: s.Linear) -> list[LayerTensor]:
    return _weight_and_bias((m.out_features, m.in_features), m.bias)


@register_layer("conv1d", "conv2d", "conv3d")
def conv(m: s.Conv1d | s.Conv2d | s.Conv3d) -> list[LayerTensor]:
    return _weight_and_bias((m.out_channels, m.in_channels // m.groups, *m.kernel()), m.bias, groups=m.groups)


@register_layer("embedding")
def embedding(m: s.Embedding) -> list[LayerTensor]:
    # torch's Embedding.reset_parameters zeroes the padding row; it never receives a gradient.
    row = m.padding_row()
    post = () if row is None else (f"zero_row:{row}",)
    return _weight_and_bias((m.num_embeddings, m.embedding_dim), False, post)


def _affine(shape: tuple[int, ...], weight: bool, bias: bool) -> list[LayerTensor]:
    # Norm parameters scale features elementwise and have no fan; both fans are the feature count.
    n = math.prod(shape)
    tensors = [LayerTensor("weight", shape, "weight", n, n)] if weight else []
    if bias:
        tensors.append(LayerTensor("bias", shape, "bias", n, n))
    return tensors


@register_layer("layer_norm")
def layer_norm(m: s.LayerNorm) -> list[LayerTensor]:
    return _affine(m.shape(), m.elementwise_affine, m.elementwise_affine and m.bias)


@register_layer("batch_norm1d", "batch_norm2d", "batch_norm3d")
def batch_norm(m: s.BatchNorm1d | s.BatchNorm2d | s.BatchNorm3d) -> list[LayerTensor]:
    c = m.num_features
    tensors = _affine((c,), m.affine, m.affine)
    if m.track_running_stats:
        tensors += [
            LayerTensor("running_mean", (c,), "running_mean", c, c, buffer_value=0.0),
            LayerTensor("running_var", (c,), "running_var", c, c, buffer_value=1.0),
            LayerTensor("num_batches_tracked", (), "num_batches_tracked", 1, 1, buffer_value=0.0, integer=True),
        ]
    return tensors


@register_layer(*s.ACTIVATION_TYPES, "dropout", "flatten")
def stateless(m: s.Module) -> list[LayerTensor]:
    return []
