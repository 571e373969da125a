"""The torch module a tree spec describes, runnable: the reference for names and shapes, and the
network the report probes for signal propagation and LSUV.

Each spec module type registers its builder in MODULES: leaf layers and containers here, composite
blocks (whose torch classes live in initium.service.model.blocks) below them.
tests/service/test_layer_registry.py holds MODULES equal to the spec's module types.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from initium.schemas import spec as s
from initium.service.model import blocks
from initium.service.registry import Registry

# Spec module -> the torch module it describes (on the current default device).
Builder = Callable[[Any], nn.Module]
MODULES: Registry[Builder] = Registry("model module type")


def _tuple(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else tuple(value)


def _conv(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.in_channels, m.out_channels, _tuple(m.kernel_size), stride=_tuple(m.stride), padding=_tuple(m.padding),
        dilation=_tuple(m.dilation), groups=m.groups, bias=m.bias, padding_mode=m.padding_mode,
    )  # fmt: skip


def _conv_t(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.in_channels, m.out_channels, _tuple(m.kernel_size), stride=_tuple(m.stride), padding=_tuple(m.padding),
        output_padding=_tuple(m.output_padding), dilation=_tuple(m.dilation), groups=m.groups, bias=m.bias,
    )  # fmt: skip


def _bn(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats
    )


# Recurrent layers return (output, state): these keep the output, so they chain in a Sequential.
class RNN(nn.RNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out: torch.Tensor = super().forward(x)[0]
        return out


class LSTM(nn.LSTM):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out: torch.Tensor = super().forward(x)[0]
        return out


class GRU(nn.GRU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out: torch.Tensor = super().forward(x)[0]
        return out


class SelfAttention(nn.MultiheadAttention):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out: torch.Tensor = super().forward(x, x, x, need_weights=False)[0]
        return out


# Every module type but the containers (below) and `parameter`, a raw tensor that build_sequential
# makes an attribute of its parent rather than a module.
_LEAVES: dict[str, Builder] = {
    "linear": lambda m: nn.Linear(m.in_features, m.out_features, bias=m.bias),
    "conv1d": lambda m: _conv(nn.Conv1d, m),
    "conv2d": lambda m: _conv(nn.Conv2d, m),
    "conv3d": lambda m: _conv(nn.Conv3d, m),
    "conv_transpose1d": lambda m: _conv_t(nn.ConvTranspose1d, m),
    "conv_transpose2d": lambda m: _conv_t(nn.ConvTranspose2d, m),
    "conv_transpose3d": lambda m: _conv_t(nn.ConvTranspose3d, m),
    "embedding": lambda m: nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx),
    "layer_norm": lambda m: nn.LayerNorm(m.shape(), eps=m.eps, elementwise_affine=m.elementwise_affine, bias=m.bias),
    "rms_norm": lambda m: nn.RMSNorm(m.shape(), eps=m.eps, elementwise_affine=m.elementwise_affine),
    "group_norm": lambda m: nn.GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=m.affine),
    "batch_norm1d": lambda m: _bn(nn.BatchNorm1d, m),
    "batch_norm2d": lambda m: _bn(nn.BatchNorm2d, m),
    "batch_norm3d": lambda m: _bn(nn.BatchNorm3d, m),
    "instance_norm1d": lambda m: _bn(nn.InstanceNorm1d, m),
    "instance_norm2d": lambda m: _bn(nn.InstanceNorm2d, m),
    "instance_norm3d": lambda m: _bn(nn.InstanceNorm3d, m),
    "rnn": lambda m: RNN(m.input_size, m.hidden_size, m.num_layers, nonlinearity=m.nonlinearity, bias=m.bias,
                            batch_first=True, bidirectional=m.bidirectional),
    "lstm": lambda m: LSTM(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, batch_first=True,
                              bidirectional=m.bidirectional, proj_size=m.proj_size),
    "gru": lambda m: GRU(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, batch_first=True,
                            bidirectional=m.bidirectional),
    "multihead_attention": lambda m: SelfAttention(m.embed_dim, m.num_heads, bias=m.bias, batch_first=True,
                                                           add_bias_kv=m.add_bias_kv, kdim=m.kdim, vdim=m.vdim),
    "relu": lambda m: nn.ReLU(),
    "leaky_relu": lambda m: nn.LeakyReLU(m.negative_slope),
    "tanh": lambda m: nn.Tanh(),
    "sigmoid": lambda m: nn.Sigmoid(),
    "gelu": lambda m: nn.GELU(approximate=m.approximate),
    "selu": lambda m: nn.SELU(),
    "silu": lambda m: nn.SiLU(),
    "identity": lambda m: nn.Identity(),
    "dropout": lambda m: nn.Dropout(m.p),
    "flatten": lambda m: nn.Flatten(m.start_dim, m.end_dim),
    # Composite blocks: torch classes with the parameter names plan/composite.py gives their leaves.
    "transformer_block": blocks.TransformerBlock,
    "resnet_basic": blocks.ResNetBlock,
    "resnet_bottleneck": blocks.ResNetBlock,
}  # fmt: skip
for _name, _builder in _LEAVES.items():
    MODULES.register(_name)(_builder)


class Residual(nn.Module):
    """x + body(x), or shortcut(x) + body(x)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = (x if self.shortcut is None else self.shortcut(x)) + self.body(x)
        return out


class Repeat(nn.ModuleList):
    """N copies applied in order, named 0 .. N-1 like an nn.ModuleList."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x)
        return x


def build_sequential(modules: list[s.Module]) -> nn.Sequential:
    children: OrderedDict[str, nn.Module] = OrderedDict()
    raw: list[s.Parameter] = []
    for index, m in enumerate(modules):
        if isinstance(m, s.Parameter):
            raw.append(m)  # a raw tensor is an attribute of its parent, not a child module
            continue
        children[m.name if m.name is not None else str(index)] = build_module(m)
    sequential = nn.Sequential(children)
    for p in raw:
        sequential.register_parameter(p.name, nn.Parameter(torch.empty(p.shape)))
    return sequential


@MODULES.register("sequential")
def _sequential(m: s.Sequential) -> nn.Module:
    return build_sequential(m.modules)


@MODULES.register("repeat")
def _repeat(m: s.Repeat) -> nn.Module:
    return Repeat([build_module(m.block) for _ in range(m.count)])


@MODULES.register("residual")
def _residual(m: s.Residual) -> nn.Module:
    return Residual(build_sequential(m.body), build_sequential(m.shortcut) if m.shortcut else None)


def build_module(m: s.Module) -> nn.Module:
    """The torch module of one spec module (and its children); UnknownNameError for an unregistered type."""
    return MODULES.get(m.type)(m)


def build(spec: s.Spec, device: str | torch.device = "meta") -> nn.Sequential:
    """The whole model, on the meta device by default (no memory until values are loaded)."""
    with torch.device(device):
        return build_sequential(spec.modules)
