"""Composite blocks: a transformer layer and torchvision-style ResNet blocks, expanded by the planner."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from initium.schemas._module import _Module


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
