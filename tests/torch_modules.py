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
}


def build_module(modules: list[s.Module]) -> nn.Sequential:
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for index, m in enumerate(modules):
        key = m.name if m.name is not None else str(index)
        children[key] = build_module(m.modules) if isinstance(m, s.Sequential) else BUILDERS[m.type](m)
    return nn.Sequential(children)


def build(spec: s.Spec) -> nn.Module:
    with torch.device("meta"):
        return build_module(spec.modules)
