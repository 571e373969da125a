"""The architecture spec: a module tree whose tensors mirror a torch module's state_dict.

Leaf layers live in spec_layers, composite blocks in spec_blocks, the manifest form in
spec_manifest; this module holds the containers, the Module union and Spec, and re-exports all.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from initium.schemas._base import WireModel
from initium.schemas._module import (
    TORCH_RESERVED_NAMES,
    ExtraRole,
    IntOrTuple,
    ModuleName,
    ParameterizedType,
    _Module,
    check_tensor_name,
)
from initium.schemas.spec_blocks import ResNetBasicBlock, ResNetBottleneck, TransformerBlock
from initium.schemas.spec_layers import (
    GELU,
    GRU,
    LSTM,
    RNN,
    SELU,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    LeakyReLU,
    LecunTanh,
    Linear,
    MultiheadAttention,
    Parameter,
    ReLU,
    RMSNorm,
    Sigmoid,
    SiLU,
    Tanh,
)
from initium.schemas.spec_manifest import Manifest, ManifestTensor
from initium.schemas.spec_pooling import (
    POOLING_TYPES,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
)


class Repeat(_Module):
    """`count` copies of `block`, named 0 .. count-1 under this module, as an nn.Sequential or ModuleList."""

    type: Literal["repeat"]
    count: Annotated[int, Field(ge=1, le=10_000)]
    block: Module


class Residual(_Module):
    """x + body(x), or shortcut(x) + body(x) with a projection shortcut; children `body` and `shortcut`."""

    type: Literal["residual"]
    body: list[Module] = Field(min_length=1, max_length=100_000)
    shortcut: list[Module] | None = None

    @model_validator(mode="after")
    def _check_unique_names(self) -> Residual:
        # body and shortcut are sibling lists of their own (body.A, shortcut.A): each must be unique.
        _check_unique(self.body)
        _check_unique(self.shortcut or [])
        return self


class Sequential(_Module):
    """torch.nn.Sequential: children named by their `name`, or by their index when unnamed."""

    type: Literal["sequential"]
    modules: list[Module] = Field(max_length=100_000)

    @model_validator(mode="after")
    def _check_unique_names(self) -> Sequential:
        _check_unique(self.modules)
        return self


def _check_unique(modules: list[Module]) -> None:
    seen: set[str] = set()
    for module in modules:
        if module.name is not None:
            if module.name in seen:
                raise ValueError(f"duplicate module name {module.name!r}; names of siblings must be unique")
            seen.add(module.name)


Module = Annotated[
    (
        Linear
        | Conv1d
        | Conv2d
        | Conv3d
        | Embedding
        | LayerNorm
        | BatchNorm1d
        | BatchNorm2d
        | BatchNorm3d
        | ReLU
        | LeakyReLU
        | Tanh
        | Sigmoid
        | GELU
        | SELU
        | SiLU
        | Identity
        | Dropout
        | Flatten
        | Sequential
        | ConvTranspose1d
        | ConvTranspose2d
        | ConvTranspose3d
        | RNN
        | LSTM
        | GRU
        | MultiheadAttention
        | RMSNorm
        | GroupNorm
        | InstanceNorm1d
        | InstanceNorm2d
        | InstanceNorm3d
        | Parameter
        | LecunTanh
        | MaxPool1d
        | MaxPool2d
        | MaxPool3d
        | AvgPool1d
        | AvgPool2d
        | AvgPool3d
        | AdaptiveAvgPool1d
        | AdaptiveAvgPool2d
        | AdaptiveAvgPool3d
        | Repeat
        | Residual
        | TransformerBlock
        | ResNetBasicBlock
        | ResNetBottleneck
    ),
    Field(discriminator="type"),
]
for _container in (Sequential, Repeat, Residual):
    _container.model_rebuild()

ACTIVATION_TYPES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "selu", "silu", "identity", "lecun_tanh")


class Spec(WireModel):
    """A model: its top level is a sequential of modules, like the root nn.Sequential."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    modules: list[Module] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _check_unique_names(self) -> Spec:
        _check_unique(self.modules)
        for module in self.modules:  # a top-level parameter's name is its tensor's whole name
            if isinstance(module, Parameter):
                check_tensor_name(module.name)
        return self


__all__ = [
    "ACTIVATION_TYPES",
    "POOLING_TYPES",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "LecunTanh",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv1d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "GRU",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LSTM",
    "MultiheadAttention",
    "Parameter",
    "RMSNorm",
    "RNN",
    "Repeat",
    "ResNetBasicBlock",
    "ResNetBottleneck",
    "Residual",
    "TransformerBlock",
    "Conv2d",
    "Conv3d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "ExtraRole",
    "IntOrTuple",
    "Identity",
    "Manifest",
    "ManifestTensor",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "Module",
    "ModuleName",
    "ParameterizedType",
    "ReLU",
    "SELU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Spec",
    "TORCH_RESERVED_NAMES",
    "Tanh",
]
