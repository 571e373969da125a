"""Layer types: each is a pure function from its spec to the tensors torch's state_dict holds for it.

The planner's part of the layer-type registry: every leaf type registers here (packed layers in
layers_packed), composite blocks in composite, and the containers are walked by plan.tree.
tests/service/test_layer_registry.py holds these together equal to the spec's module types.
"""

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
class Part:
    """Indices [start, stop) along `axis` of a packed tensor that are logically their own matrix: one
    gate of a recurrent layer, the query, key or value block of a packed attention projection, or
    one block of a fused projection (axis 1 for GPT-2's Conv1D c_attn, stored [in, out]). Rules
    match parts by their roles, and fans are the part's own under the initium convention."""

    start: int
    stop: int
    roles: tuple[str, ...]
    fan_in: int
    fan_out: int
    axis: int = 0


@dataclass(frozen=True)
class LayerTensor:
    """One state_dict entry of a layer, named relative to the layer ('' names the layer itself)."""

    local_name: str
    shape: tuple[int, ...]
    role: Role
    fan_in: int  # torch's fans (torch.nn.init._calculate_fan_in_and_fan_out)
    fan_out: int
    # Buffers are not parameters: they start at torch's fixed value and no rule touches them.
    buffer_value: float | None = None
    integer: bool = False
    post: tuple[str, ...] = field(default_factory=tuple)
    groups: int = 1
    # The initium convention's fans where they differ from torch's (grouped and transposed convs).
    initium_fans: tuple[int, int] | None = None
    roles: tuple[str, ...] = ()  # roles besides `role`: recurrent, projection, attention_output
    parts: tuple[Part, ...] = ()
    hidden_size: int = 0  # recurrent layers: torch's default init bound is 1/sqrt(hidden_size)
    head_dim: int | None = None  # attention projections: one head's width, where the spec gives it


LayerFn = Callable[[Any], list[LayerTensor]]
_LAYERS: Registry[LayerFn] = Registry("module type")
# Containers hold modules, not tensors: plan.tree walks into them, so they register no layer function.
CONTAINER_TYPES = ("sequential", "repeat", "residual")


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
    weight: tuple[int, ...],
    bias: bool,
    post: tuple[str, ...] = (),
    groups: int = 1,
    initium_fans: tuple[int, int] | None = None,
    bias_size: int | None = None,
    roles: tuple[str, ...] = (),
) -> list[LayerTensor]:
    # A bias has no fans of its own; it takes its layer's, as torch's default bias bound
    # 1/sqrt(fan_in) does, so fan-based schemes scale it like the weight it belongs to.
    fan_in, fan_out = torch_fans(weight)
    common = {"groups": groups, "initium_fans": initium_fans, "roles": roles}
    tensors = [LayerTensor("weight", weight, "weight", fan_in, fan_out, post=post, **common)]  # type: ignore[arg-type]
    if bias:
        size = weight[0] if bias_size is None else bias_size
        tensors.append(LayerTensor("bias", (size,), "bias", fan_in, fan_out, **common))  # type: ignore[arg-type]
    return tensors


@register_layer("linear")
def linear(m: s.Linear) -> list[LayerTensor]:
    return _weight_and_bias((m.out_features, m.in_features), m.bias)


@register_layer("conv1d", "conv2d", "conv3d")
def conv(m: s.Conv1d | s.Conv2d | s.Conv3d) -> list[LayerTensor]:
    # torch counts fan_out over all groups (pytorch/pytorch#23854); each output channel of a
    # grouped conv reads only its group, so the initium convention divides by groups.
    weight = (m.out_channels, m.in_channels // m.groups, *m.kernel())
    fan_in, fan_out = torch_fans(weight)
    return _weight_and_bias(weight, m.bias, groups=m.groups, initium_fans=(fan_in, fan_out // m.groups))


@register_layer("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(m: s.ConvTranspose1d | s.ConvTranspose2d | s.ConvTranspose3d) -> list[LayerTensor]:
    # torch stores [in, out / groups, *k] and applies its conv rule to it, so its "fan_in" is
    # out / groups * rf. Each output of a transposed conv sums in / groups channels times the taps,
    # and each input reaches out / groups channels: those are the initium fans.
    kernel = m.kernel()
    rf = math.prod(kernel)
    weight = (m.in_channels, m.out_channels // m.groups, *kernel)
    fans = ((m.in_channels // m.groups) * rf, (m.out_channels // m.groups) * rf)
    return _weight_and_bias(weight, m.bias, groups=m.groups, initium_fans=fans, bias_size=m.out_channels)


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


@register_layer("rms_norm")
def rms_norm(m: s.RMSNorm) -> list[LayerTensor]:
    return _affine(m.shape(), m.elementwise_affine, False)


@register_layer("group_norm")
def group_norm(m: s.GroupNorm) -> list[LayerTensor]:
    return _affine((m.num_channels,), m.affine, m.affine)


@register_layer("batch_norm1d", "batch_norm2d", "batch_norm3d", "instance_norm1d", "instance_norm2d", "instance_norm3d")
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


@register_layer("parameter")
def parameter(m: s.Parameter) -> list[LayerTensor]:
    shape = tuple(m.shape)
    default = torch_fans(shape) if len(shape) >= 2 else (math.prod(shape), math.prod(shape))
    fans = (m.fan_in or default[0], m.fan_out or default[1])
    return [LayerTensor("", shape, "weight", *fans)]


@register_layer(*s.ACTIVATION_TYPES, *s.POOLING_TYPES, "dropout", "flatten")
def stateless(m: s.Module) -> list[LayerTensor]:
    return []
