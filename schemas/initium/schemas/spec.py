"""The architecture spec: a module tree whose tensors mirror a torch module's state_dict."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, model_validator

from initium.schemas._base import WireModel

# A child's name becomes one dotted component of every tensor name below it, as in torch's
# named_modules(); a dot would split it, and a leading digit would collide with the index
# names torch gives unnamed children.
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
IntOrTuple = int | list[int]


# Roles a module can add to its tensors, for rules to match: composite blocks tag their residual
# output projections and last norms; a hand-written spec can tag its own layers the same way.
ExtraRole = Literal[
    "residual_output", "residual_norm", "attention_output", "query", "key", "value", "classifier", "scale",
]  # fmt: skip


# Attribute names nn.Module, nn.Sequential and nn.ModuleList already use (torch 2.13): torch's
# add_module refuses a child with one of these names, so no torch model can have it.
TORCH_RESERVED_NAMES = frozenset(
    (
        "T_destination",
        "add_module",
        "append",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extend",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "insert",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "pop",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
    )
)


class _Module(WireModel):
    name: ModuleName | None = None
    roles: list[ExtraRole] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _check_name(self) -> _Module:
        if self.name in TORCH_RESERVED_NAMES:
            raise ValueError(
                f"name {self.name!r} is an attribute of torch.nn.Module, so torch cannot name a child so; rename it"
            )
        return self


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


class TransformerBlock(_Module):
    """A transformer layer. Children: norm1, attn.{q_proj, k_proj, v_proj, o_proj}, norm2, and
    mlp.{fc1, fc2} or, gated (SwiGLU as in Llama), mlp.{gate_proj, up_proj, down_proj}.

    norm_first: pre-norm (GPT-2, Llama) or post-norm (BERT, the original transformer).
    n_kv_heads < n_heads gives grouped-query attention (k_proj and v_proj output n_kv_heads heads).
    """

    type: Literal["transformer_block"]
    d_model: PositiveInt
    n_heads: PositiveInt
    n_kv_heads: PositiveInt | None = None
    mlp_hidden: PositiveInt | None = Field(None, description="default: mlp_ratio * d_model")
    mlp_ratio: Annotated[float, Field(gt=0)] = 4.0
    gated_mlp: bool = False
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    norm: Literal["layer_norm", "rms_norm"] = "layer_norm"
    norm_first: bool = True
    bias: bool = True

    @model_validator(mode="after")
    def _check_heads(self) -> TransformerBlock:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}")
        return self

    def hidden(self) -> int:
        return self.mlp_hidden or int(self.mlp_ratio * self.d_model)


class _ResNetBlock(_Module):
    """A torchvision-style residual block: conv1, bn1, conv2, bn2 (, conv3, bn3), and downsample.0/.1
    (a 1x1 conv and batch norm) when the stride or the channel count changes."""

    in_channels: PositiveInt
    channels: PositiveInt = Field(description="torchvision's planes")
    stride: PositiveInt = 1
    groups: PositiveInt = 1
    base_width: PositiveInt = 64


class ResNetBasicBlock(_ResNetBlock):
    """3x3 conv, 3x3 conv; out_channels = channels (He et al. 2016)."""

    type: Literal["resnet_basic"]


class ResNetBottleneck(_ResNetBlock):
    """1x1, 3x3 (stride, groups), 1x1 convs; width = channels * base_width / 64 * groups, out = 4 channels."""

    type: Literal["resnet_bottleneck"]


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

ACTIVATION_TYPES = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "selu", "silu", "identity")


ManifestType = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "embedding", "layer_norm", "rms_norm", "group_norm",
    "batch_norm1d", "batch_norm2d", "batch_norm3d", "instance_norm1d", "instance_norm2d", "instance_norm3d",
    "rnn", "lstm", "gru", "multihead_attention", "parameter",
]  # fmt: skip


class ManifestTensor(WireModel):
    """One tensor of a model the module tree cannot describe (what spec_from_module extracts).

    module_type says what it belongs to, for rules and torch_default; fans default to torch's rule
    (>= 2-D) or the size (vectors); running_mean, running_var and num_batches_tracked are buffers.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$", max_length=1024)]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)]
    module_type: ManifestType = "parameter"
    role: Literal["weight", "bias", "running_mean", "running_var", "num_batches_tracked"] = "weight"
    roles: list[ExtraRole] = Field(default_factory=list, max_length=8)
    fan_in: PositiveInt | None = None
    fan_out: PositiveInt | None = None
    hidden_size: PositiveInt | None = Field(None, description="recurrent layers: torch_default's 1/sqrt(hidden)")
    groups: PositiveInt = Field(1, description="convolutions: the initium fan convention counts per group")
    padding_idx: Annotated[int, Field(ge=0)] | None = Field(None, description="embeddings: this row starts at 0")
    followed_by: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="the activation the layer's output reaches first, e.g. 'relu' (for auto and relu_bias)"
    )


class Manifest(WireModel):
    """A model as a flat list of named tensors, in state_dict order."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    tensors: list[ManifestTensor] = Field(min_length=1, max_length=1_000_000)

    @model_validator(mode="after")
    def _check_unique_names(self) -> Manifest:
        seen: set[str] = set()
        for t in self.tensors:
            if t.name in seen:
                raise ValueError(f"duplicate tensor name {t.name!r}")
            seen.add(t.name)
        return self


class Spec(WireModel):
    """A model: its top level is a sequential of modules, like the root nn.Sequential."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    modules: list[Module] = Field(min_length=1, max_length=100_000)

    @model_validator(mode="after")
    def _check_unique_names(self) -> Spec:
        _check_unique(self.modules)
        return self


__all__ = [
    "ACTIVATION_TYPES",
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
    "Identity",
    "Manifest",
    "ManifestTensor",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "Module",
    "ReLU",
    "SELU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Spec",
    "Tanh",
]
