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


# The key or value input of an attention layer that reads another sequence: (role, shape) -> values.
Memory = Callable[[str, tuple[int, ...]], torch.Tensor]


class MultiheadAttention(nn.MultiheadAttention):
    """Self-attention on x; with kdim or vdim other than embed_dim the layer attends to another
    sequence (an encoder's output), so its key [..., kdim] and value [..., vdim] come from `memory`
    (the probe and LSUV draw them from the seeded probe stream, one token per query token)."""

    memory: Memory | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        key = value = x
        if not self._qkv_same_embed_dim:
            if self.memory is None:
                raise ValueError(
                    f"this attention reads key width {self.kdim} and value width {self.vdim}, not its query's "
                    f"{self.embed_dim}: it attends to another sequence, and none was given"
                )
            key = self.memory("key", (*x.shape[:-1], self.kdim)).to(x.dtype)
            value = self.memory("value", (*x.shape[:-1], self.vdim)).to(x.dtype)
        out: torch.Tensor = super().forward(x, key, value, need_weights=False)[0]
        return out


class LecunTanh(nn.Module):
    """LeCun et al. (1998), Efficient BackProp: 1.7159 tanh(2x / 3)."""

    SCALE = 1.7159  # the bound of its outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SCALE * torch.tanh(x * (2.0 / 3.0))


def _pool_args(m: Any, *fields: str) -> dict[str, Any]:
    return {field: _tuple(getattr(m, field)) for field in fields if getattr(m, field) is not None}


_MAX_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
_AVG_POOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")


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
    "multihead_attention": lambda m: MultiheadAttention(m.embed_dim, m.num_heads, bias=m.bias, batch_first=True,
                                                        add_bias_kv=m.add_bias_kv, kdim=m.kdim, vdim=m.vdim),
    "relu": lambda m: nn.ReLU(),
    "leaky_relu": lambda m: nn.LeakyReLU(m.negative_slope),
    "tanh": lambda m: nn.Tanh(),
    "sigmoid": lambda m: nn.Sigmoid(),
    "gelu": lambda m: nn.GELU(approximate=m.approximate),
    "selu": lambda m: nn.SELU(),
    "silu": lambda m: nn.SiLU(),
    "identity": lambda m: nn.Identity(),
    "lecun_tanh": lambda m: LecunTanh(),
    "dropout": lambda m: nn.Dropout(m.p),
    "max_pool1d": lambda m: nn.MaxPool1d(**_pool_args(m, *_MAX_POOL)),
    "max_pool2d": lambda m: nn.MaxPool2d(**_pool_args(m, *_MAX_POOL)),
    "max_pool3d": lambda m: nn.MaxPool3d(**_pool_args(m, *_MAX_POOL)),
    "avg_pool1d": lambda m: nn.AvgPool1d(**_pool_args(m, *_AVG_POOL)),
    "avg_pool2d": lambda m: nn.AvgPool2d(**_pool_args(m, *_AVG_POOL, "divisor_override")),
    "avg_pool3d": lambda m: nn.AvgPool3d(**_pool_args(m, *_AVG_POOL, "divisor_override")),
    "adaptive_avg_pool1d": lambda m: nn.AdaptiveAvgPool1d(_tuple(m.output_size)),
    "adaptive_avg_pool2d": lambda m: nn.AdaptiveAvgPool2d(_tuple(m.output_size)),
    "adaptive_avg_pool3d": lambda m: nn.AdaptiveAvgPool3d(_tuple(m.output_size)),
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
