"""Test helper: the torch module a spec describes, to compare state_dict names, shapes and fans."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from initium.schemas import spec as s


def _conv(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.in_channels, m.out_channels, m.kernel_size if isinstance(m.kernel_size, int) else tuple(m.kernel_size),
        stride=m.stride if isinstance(m.stride, int) else tuple(m.stride),
        padding=m.padding if isinstance(m.padding, (int, str)) else tuple(m.padding),
        dilation=m.dilation if isinstance(m.dilation, int) else tuple(m.dilation),
        groups=m.groups, bias=m.bias, padding_mode=m.padding_mode,
    )  # fmt: skip


def _bn(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats
    )


BUILDERS: dict[str, Any] = {
    "linear": lambda m: nn.Linear(m.in_features, m.out_features, bias=m.bias),
    "conv1d": lambda m: _conv(nn.Conv1d, m),
    "conv2d": lambda m: _conv(nn.Conv2d, m),
    "conv3d": lambda m: _conv(nn.Conv3d, m),
    "embedding": lambda m: nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx),
    "layer_norm": lambda m: nn.LayerNorm(m.shape(), eps=m.eps, elementwise_affine=m.elementwise_affine, bias=m.bias),
    "batch_norm1d": lambda m: _bn(nn.BatchNorm1d, m),
    "batch_norm2d": lambda m: _bn(nn.BatchNorm2d, m),
    "batch_norm3d": lambda m: _bn(nn.BatchNorm3d, m),
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
    "conv_transpose1d": lambda m: _conv_t(nn.ConvTranspose1d, m),
    "conv_transpose2d": lambda m: _conv_t(nn.ConvTranspose2d, m),
    "conv_transpose3d": lambda m: _conv_t(nn.ConvTranspose3d, m),
    "rnn": lambda m: nn.RNN(m.input_size, m.hidden_size, m.num_layers, nonlinearity=m.nonlinearity, bias=m.bias,
                            bidirectional=m.bidirectional),
    "lstm": lambda m: nn.LSTM(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, bidirectional=m.bidirectional,
                              proj_size=m.proj_size),
    "gru": lambda m: nn.GRU(m.input_size, m.hidden_size, m.num_layers, bias=m.bias, bidirectional=m.bidirectional),
    "multihead_attention": lambda m: nn.MultiheadAttention(m.embed_dim, m.num_heads, bias=m.bias,
                                                           add_bias_kv=m.add_bias_kv, kdim=m.kdim, vdim=m.vdim),
    "rms_norm": lambda m: nn.RMSNorm(m.shape(), eps=m.eps, elementwise_affine=m.elementwise_affine),
    "group_norm": lambda m: nn.GroupNorm(m.num_groups, m.num_channels, eps=m.eps, affine=m.affine),
    "instance_norm1d": lambda m: _bn(nn.InstanceNorm1d, m),
    "instance_norm2d": lambda m: _bn(nn.InstanceNorm2d, m),
    "instance_norm3d": lambda m: _bn(nn.InstanceNorm3d, m),
}  # fmt: skip


def _conv_t(cls: type[nn.Module], m: Any) -> nn.Module:
    return cls(
        m.in_channels, m.out_channels, m.kernel_size if isinstance(m.kernel_size, int) else tuple(m.kernel_size),
        stride=m.stride if isinstance(m.stride, int) else tuple(m.stride),
        padding=m.padding if isinstance(m.padding, int) else tuple(m.padding),
        output_padding=m.output_padding if isinstance(m.output_padding, int) else tuple(m.output_padding),
        dilation=m.dilation if isinstance(m.dilation, int) else tuple(m.dilation), groups=m.groups, bias=m.bias,
    )  # fmt: skip


def build_module(modules: list[s.Module]) -> nn.Sequential:
    children: OrderedDict[str, nn.Module] = OrderedDict()
    raw: list[s.Parameter] = []
    for index, m in enumerate(modules):
        if isinstance(m, s.Parameter):
            raw.append(m)  # a raw tensor is an attribute of its parent, not a child module
            continue
        key = m.name if m.name is not None else str(index)
        children[key] = build_one(m)
    sequential = nn.Sequential(children)
    for p in raw:
        sequential.register_parameter(p.name, nn.Parameter(torch.empty(p.shape)))
    return sequential


def build_one(m: s.Module) -> nn.Module:
    if isinstance(m, s.Sequential):
        return build_module(m.modules)
    if isinstance(m, s.Repeat):
        return nn.ModuleList([build_one(m.block) for _ in range(m.count)])
    if isinstance(m, s.Residual):
        return Residual(build_module(m.body), build_module(m.shortcut) if m.shortcut else None)
    return BUILDERS[m.type](m)


def build(spec: s.Spec) -> nn.Module:
    with torch.device("meta"):
        return build_module(spec.modules)


class Residual(nn.Module):
    """The torch module a `residual` spec describes: x + body(x), or shortcut(x) + body(x)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.shortcut is None else self.shortcut(x)) + self.body(x)


class _Attention(nn.Module):
    def __init__(self, d: int, kv: int, bias: bool) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=bias), nn.Linear(d, kv, bias=bias)
        self.v_proj, self.o_proj = nn.Linear(d, kv, bias=bias), nn.Linear(d, d, bias=bias)


class _MLP(nn.Module):
    def __init__(self, d: int, h: int, bias: bool, gated: bool) -> None:
        super().__init__()
        if gated:
            self.gate_proj, self.up_proj = nn.Linear(d, h, bias=bias), nn.Linear(d, h, bias=bias)
            self.down_proj = nn.Linear(h, d, bias=bias)
        else:
            self.fc1, self.fc2 = nn.Linear(d, h, bias=bias), nn.Linear(h, d, bias=bias)


class TransformerBlock(nn.Module):
    """The parameters of a `transformer_block` spec, named as initium names them."""

    def __init__(self, m: Any) -> None:
        super().__init__()
        d, kv = m.d_model, (m.n_kv_heads or m.n_heads) * (m.d_model // m.n_heads)

        def norm() -> nn.Module:
            return nn.RMSNorm(d) if m.norm == "rms_norm" else nn.LayerNorm(d, bias=m.bias)

        self.norm1, self.attn = norm(), _Attention(d, kv, m.bias)
        self.norm2, self.mlp = norm(), _MLP(d, m.hidden(), m.bias, m.gated_mlp)


class ResNetBlock(nn.Module):
    """torchvision's BasicBlock / Bottleneck parameter layout."""

    def __init__(self, m: Any) -> None:
        super().__init__()
        if m.type == "resnet_basic":
            out = m.channels
            self.conv1 = nn.Conv2d(m.in_channels, out, 3, m.stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out)
            self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out)
        else:
            width, out = int(m.channels * (m.base_width / 64.0)) * m.groups, m.channels * 4
            self.conv1 = nn.Conv2d(m.in_channels, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, m.stride, 1, groups=m.groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        if m.stride != 1 or m.in_channels != out:
            self.downsample = nn.Sequential(nn.Conv2d(m.in_channels, out, 1, m.stride, bias=False), nn.BatchNorm2d(out))


BUILDERS.update({"transformer_block": TransformerBlock, "resnet_basic": ResNetBlock, "resnet_bottleneck": ResNetBlock})
