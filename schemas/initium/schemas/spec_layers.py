"""Leaf layers of the spec tree: each mirrors a torch module and its state_dict."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from initium.schemas._module import IntOrTuple, ModuleName, _Module


class Linear(_Module):
    """torch.nn.Linear: weight [out_features, in_features], bias [out_features]."""

    type: Literal["linear"]
    in_features: PositiveInt
    out_features: PositiveInt
    bias: bool = True


class _ConvNd(_Module):
    """torch.nn.ConvNd: weight [out_channels, in_channels / groups, *kernel_size]."""

    in_channels: PositiveInt
    out_channels: PositiveInt
    kernel_size: IntOrTuple
    stride: IntOrTuple = 1
    padding: IntOrTuple | Literal["same", "valid"] = 0
    dilation: IntOrTuple = 1
    groups: PositiveInt = 1
    bias: bool = True
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"
    spatial_dims: ClassVar[int]

    def kernel(self) -> tuple[int, ...]:
        return _expand(self.kernel_size, self.spatial_dims)

    @model_validator(mode="after")
    def _check_geometry(self) -> _ConvNd:
        n = self.spatial_dims
        for field in ("kernel_size", "stride", "dilation"):
            values = _expand(getattr(self, field), n, field)
            if any(v < 1 for v in values):
                raise ValueError(f"{field} must be positive integers, got {getattr(self, field)}")
        if isinstance(self.padding, (int, list)):
            if any(v < 0 for v in _expand(self.padding, n, "padding")):
                raise ValueError(f"padding must be non-negative, got {self.padding}")
        elif self.padding == "same" and any(s != 1 for s in _expand(self.stride, n)):
            raise ValueError("padding='same' needs stride 1 (as torch requires); use an explicit padding")
        for field in ("in_channels", "out_channels"):
            if getattr(self, field) % self.groups:
                raise ValueError(f"{field}={getattr(self, field)} must be divisible by groups={self.groups}")
        return self


def _expand(value: IntOrTuple, n: int, field: str = "value") -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if len(value) != n:
        raise ValueError(f"{field} must be an int or a list of {n} ints, got {value}")
    return tuple(value)


class Conv1d(_ConvNd):
    type: Literal["conv1d"]
    spatial_dims: ClassVar[int] = 1


class Conv2d(_ConvNd):
    type: Literal["conv2d"]
    spatial_dims: ClassVar[int] = 2


class Conv3d(_ConvNd):
    type: Literal["conv3d"]
    spatial_dims: ClassVar[int] = 3


class Embedding(_Module):
    """torch.nn.Embedding: weight [num_embeddings, embedding_dim]; the padding row is zero."""

    type: Literal["embedding"]
    num_embeddings: PositiveInt
    embedding_dim: PositiveInt
    padding_idx: int | None = None

    @model_validator(mode="after")
    def _check_padding_idx(self) -> Embedding:
        n = self.num_embeddings
        if self.padding_idx is not None and not -n <= self.padding_idx < n:
            raise ValueError(f"padding_idx must be within [-{n}, {n - 1}], got {self.padding_idx}")
        return self

    def padding_row(self) -> int | None:
        if self.padding_idx is None:
            return None
        return self.padding_idx % self.num_embeddings


class LayerNorm(_Module):
    """torch.nn.LayerNorm: weight and bias of shape normalized_shape."""

    type: Literal["layer_norm"]
    normalized_shape: PositiveInt | Annotated[list[PositiveInt], Field(min_length=1)]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    elementwise_affine: bool = True
    bias: bool = True

    def shape(self) -> tuple[int, ...]:
        ns = self.normalized_shape
        return (ns,) if isinstance(ns, int) else tuple(ns)


class _BatchNorm(_Module):
    """torch.nn.BatchNormNd: weight, bias [C]; buffers running_mean, running_var, num_batches_tracked."""

    num_features: PositiveInt
    eps: Annotated[float, Field(gt=0)] = 1e-5
    momentum: Annotated[float, Field(ge=0, le=1)] | None = 0.1
    affine: bool = True
    track_running_stats: bool = True


class BatchNorm1d(_BatchNorm):
    type: Literal["batch_norm1d"]


class BatchNorm2d(_BatchNorm):
    type: Literal["batch_norm2d"]


class BatchNorm3d(_BatchNorm):
    type: Literal["batch_norm3d"]


class ReLU(_Module):
    type: Literal["relu"]


class LeakyReLU(_Module):
    type: Literal["leaky_relu"]
    negative_slope: Annotated[float, Field(ge=0)] = 0.01


class Tanh(_Module):
    type: Literal["tanh"]


class LecunTanh(_Module):
    """LeCun et al. (1998), Efficient BackProp, section 4.4: f(x) = 1.7159 tanh(2x / 3), scaled so
    that f(+-1) = +-1 and its gain is about 1 over the range a normalized input covers."""

    type: Literal["lecun_tanh"]


class Sigmoid(_Module):
    type: Literal["sigmoid"]


class GELU(_Module):
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"


class SELU(_Module):
    type: Literal["selu"]


class SiLU(_Module):
    type: Literal["silu"]


class Identity(_Module):
    type: Literal["identity"]


class Dropout(_Module):
    type: Literal["dropout"]
    p: Annotated[float, Field(ge=0, le=1)] = 0.5


class Flatten(_Module):
    type: Literal["flatten"]
    start_dim: int = 1
    end_dim: int = -1


class _ConvTransposeNd(_ConvNd):
    """torch.nn.ConvTransposeNd: weight [in_channels, out_channels / groups, *kernel_size], bias [out_channels]."""

    output_padding: IntOrTuple = 0

    @model_validator(mode="after")
    def _check_transposed(self) -> _ConvTransposeNd:
        # torch's transposed convs take only explicit integer padding and zero padding mode.
        if isinstance(self.padding, str):
            raise ValueError(f"padding={self.padding!r} is not supported by transposed convs; give integers")
        if self.padding_mode != "zeros":
            raise ValueError("transposed convs only support padding_mode='zeros'")
        return self


class ConvTranspose1d(_ConvTransposeNd):
    type: Literal["conv_transpose1d"]
    spatial_dims: ClassVar[int] = 1


class ConvTranspose2d(_ConvTransposeNd):
    type: Literal["conv_transpose2d"]
    spatial_dims: ClassVar[int] = 2


class ConvTranspose3d(_ConvTransposeNd):
    type: Literal["conv_transpose3d"]
    spatial_dims: ClassVar[int] = 3


class _RNNBase(_Module):
    """torch.nn.RNN/LSTM/GRU: weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (+ _reverse)."""

    input_size: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt = 1
    bias: bool = True
    batch_first: bool = False
    dropout: Annotated[float, Field(ge=0, le=1)] = 0.0
    bidirectional: bool = False


class RNN(_RNNBase):
    type: Literal["rnn"]
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTM(_RNNBase):
    """proj_size > 0 adds weight_hr_l{k} [proj_size, hidden_size] and makes the hidden state proj_size wide."""

    type: Literal["lstm"]
    proj_size: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check_proj(self) -> LSTM:
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size={self.proj_size} must be smaller than hidden_size={self.hidden_size}")
        return self


class GRU(_RNNBase):
    type: Literal["gru"]


class MultiheadAttention(_Module):
    """torch.nn.MultiheadAttention: packed in_proj_weight [3E, E] when kdim and vdim equal embed_dim,
    else q_proj_weight, k_proj_weight, v_proj_weight; out_proj.weight [E, E]."""

    type: Literal["multihead_attention"]
    embed_dim: PositiveInt
    num_heads: PositiveInt
    dropout: Annotated[float, Field(ge=0, le=1)] = 0.0
    bias: bool = True
    add_bias_kv: bool = False
    kdim: PositiveInt | None = None
    vdim: PositiveInt | None = None
    batch_first: bool = False

    @model_validator(mode="after")
    def _check_heads(self) -> MultiheadAttention:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        return self

    def packed(self) -> bool:
        return self.kdim in (None, self.embed_dim) and self.vdim in (None, self.embed_dim)


class RMSNorm(_Module):
    """torch.nn.RMSNorm: weight of shape normalized_shape (no bias)."""

    type: Literal["rms_norm"]
    normalized_shape: PositiveInt | Annotated[list[PositiveInt], Field(min_length=1)]
    eps: Annotated[float, Field(gt=0)] | None = None
    elementwise_affine: bool = True

    def shape(self) -> tuple[int, ...]:
        ns = self.normalized_shape
        return (ns,) if isinstance(ns, int) else tuple(ns)


class GroupNorm(_Module):
    """torch.nn.GroupNorm: weight and bias [num_channels]."""

    type: Literal["group_norm"]
    num_groups: PositiveInt
    num_channels: PositiveInt
    eps: Annotated[float, Field(gt=0)] = 1e-5
    affine: bool = True

    @model_validator(mode="after")
    def _check_groups(self) -> GroupNorm:
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels={self.num_channels} must be divisible by num_groups={self.num_groups}")
        return self


class _InstanceNorm(_BatchNorm):
    """torch.nn.InstanceNormNd: like batch norm but affine and running statistics default off."""

    affine: bool = False
    track_running_stats: bool = False


class InstanceNorm1d(_InstanceNorm):
    type: Literal["instance_norm1d"]


class InstanceNorm2d(_InstanceNorm):
    type: Literal["instance_norm2d"]


class InstanceNorm3d(_InstanceNorm):
    type: Literal["instance_norm3d"]


class Parameter(_Module):
    """A raw tensor (an nn.Parameter attribute such as cls_token or pos_embed), named by `name` itself.

    fan_in and fan_out default to torch's rule for >= 2-D shapes and to the size for vectors.
    """

    type: Literal["parameter"]
    name: ModuleName
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)]
    fan_in: PositiveInt | None = None
    fan_out: PositiveInt | None = None
