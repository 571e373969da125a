"""Composite blocks expand into named leaf modules: what the tree walker sees inside a transformer
layer or a ResNet block, with each leaf's residual branch and extra roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from initium.schemas import spec as s
from initium.schemas._module import ExtraRole
from initium.service.registry import Registry


@dataclass(frozen=True)
class Child:
    """One leaf of a composite block: its path below the block, the module, and its residual branch."""

    path: str
    module: s.Module
    branch: str | None  # below the block: 'attn', 'mlp', 'body'; None outside any residual branch


ExpandFn = Callable[[Any], list[Child]]
_COMPOSITES: Registry[ExpandFn] = Registry("composite block")


def register_composite(*names: str) -> Callable[[ExpandFn], ExpandFn]:
    def add(fn: ExpandFn) -> ExpandFn:
        for name in names:
            _COMPOSITES.register(name)(fn)
        return fn

    return add


def is_composite(module_type: str) -> bool:
    return module_type in _COMPOSITES.names()


def list_composites() -> list[str]:
    return _COMPOSITES.names()


def expand(module: s.Module) -> list[Child]:
    return _COMPOSITES.get(module.type)(module)


def _linear(n_in: int, n_out: int, bias: bool, *roles: ExtraRole) -> s.Linear:
    return s.Linear(type="linear", in_features=n_in, out_features=n_out, bias=bias, roles=list(roles))


def _norm(kind: str, d: int, bias: bool) -> s.Module:
    if kind == "rms_norm":
        return s.RMSNorm(type="rms_norm", normalized_shape=d)
    return s.LayerNorm(type="layer_norm", normalized_shape=d, bias=bias)


def _activation(kind: str) -> s.Module:
    activations: dict[str, s.Module] = {
        "gelu": s.GELU(type="gelu"),
        "relu": s.ReLU(type="relu"),
        "silu": s.SiLU(type="silu"),
    }
    return activations[kind]


@register_composite("transformer_block")
def transformer_block(m: s.TransformerBlock) -> list[Child]:
    d, head_dim = m.d_model, m.d_model // m.n_heads
    kv = (m.n_kv_heads or m.n_heads) * head_dim
    attn = [
        Child("attn.q_proj", _linear(d, d, m.bias, "query"), "attn"),
        Child("attn.k_proj", _linear(d, kv, m.bias, "key"), "attn"),
        Child("attn.v_proj", _linear(d, kv, m.bias, "value"), "attn"),
        Child("attn.o_proj", _linear(d, d, m.bias, "attention_output", "residual_output"), "attn"),
    ]
    h = m.hidden()
    if m.gated_mlp:
        mlp = [
            Child("mlp.gate_proj", _linear(d, h, m.bias), "mlp"),
            Child("mlp.act", _activation(m.activation), "mlp"),
            Child("mlp.up_proj", _linear(d, h, m.bias), "mlp"),
            Child("mlp.down_proj", _linear(h, d, m.bias, "residual_output"), "mlp"),
        ]
    else:
        mlp = [
            Child("mlp.fc1", _linear(d, h, m.bias), "mlp"),
            Child("mlp.act", _activation(m.activation), "mlp"),
            Child("mlp.fc2", _linear(h, d, m.bias, "residual_output"), "mlp"),
        ]
    # Pre-norm: each norm opens its branch; post-norm: it follows the residual sum.
    norm1 = Child("norm1", _norm(m.norm, d, m.bias), "attn" if m.norm_first else None)
    norm2 = Child("norm2", _norm(m.norm, d, m.bias), "mlp" if m.norm_first else None)
    return [norm1, *attn, norm2, *mlp]


def _conv(n_in: int, n_out: int, k: int, stride: int = 1, groups: int = 1, *roles: ExtraRole) -> s.Conv2d:
    return s.Conv2d(
        type="conv2d", in_channels=n_in, out_channels=n_out, kernel_size=k, stride=stride, padding=k // 2,
        groups=groups, bias=False, roles=list(roles),
    )  # fmt: skip


def _bn(c: int, *roles: ExtraRole) -> s.BatchNorm2d:
    return s.BatchNorm2d(type="batch_norm2d", num_features=c, roles=list(roles))


@register_composite("resnet_basic", "resnet_bottleneck")
def resnet_block(m: s.ResNetBasicBlock | s.ResNetBottleneck) -> list[Child]:
    relu = s.ReLU(type="relu")
    if isinstance(m, s.ResNetBasicBlock):
        out = m.channels
        body = [
            Child("conv1", _conv(m.in_channels, out, 3, m.stride), "body"),
            Child("bn1", _bn(out), "body"),
            Child("relu", relu, "body"),
            Child("conv2", _conv(out, out, 3, 1, 1, "residual_output"), "body"),
            Child("bn2", _bn(out, "residual_norm"), "body"),
        ]
    else:
        width, out = int(m.channels * (m.base_width / 64.0)) * m.groups, m.channels * 4
        body = [
            Child("conv1", _conv(m.in_channels, width, 1), "body"),
            Child("bn1", _bn(width), "body"),
            Child("relu", relu, "body"),
            Child("conv2", _conv(width, width, 3, m.stride, m.groups), "body"),
            Child("bn2", _bn(width), "body"),
            Child("relu2", relu, "body"),
            Child("conv3", _conv(width, out, 1, 1, 1, "residual_output"), "body"),
            Child("bn3", _bn(out, "residual_norm"), "body"),
        ]
    shortcut = []
    if m.stride != 1 or m.in_channels != out:
        shortcut = [
            Child("downsample.0", _conv(m.in_channels, out, 1, m.stride), None),
            Child("downsample.1", _bn(out), None),
        ]
    return [*body, *shortcut, Child("relu_out", relu, None)]
