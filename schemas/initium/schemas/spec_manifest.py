"""The manifest form of a spec: a flat list of named tensors, for models the tree cannot describe."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PositiveInt, model_validator

from initium.schemas._base import WireModel
from initium.schemas._module import ExtraRole, ParameterizedType, check_tensor_name

# Module types whose tensors already come in blocks (one per gate, or q/k/v): the planner splits
# them itself, so a manifest cannot split them a second way.
_BUILT_IN_PARTS = ("rnn", "lstm", "gru", "multihead_attention")


class ManifestParts(WireModel):
    """A fused tensor as contiguous blocks along one axis, each initialized as its own matrix.

    Fused projections (GPT-2's c_attn [E, 3E], Phi-3's qkv_proj and gate_up_proj) concatenate the
    OUTPUTS of several layers, so block i has fans (fan_in, fan_out * sizes[i] / shape[axis]); the
    whole tensor's fans would give xavier sqrt(6 / (E + 3E)) instead of sqrt(6 / (E + E))
    (pytorch/pytorch#166378, the fault initium already fixes for nn.MultiheadAttention).
    """

    axis: Annotated[int, Field(ge=0, description="the dimension the blocks split: 1 for GPT-2's Conv1D [in, out]")]
    sizes: list[PositiveInt] = Field(
        min_length=2,
        max_length=64,
        description="each block's length along `axis`, in order; they sum to shape[axis]. Each block's "
        "fans are (fan_in, fan_out * size / shape[axis]): a block is one of the layer's output groups",
    )
    roles: list[ExtraRole] = Field(
        min_length=2, max_length=64, description="one role per block (query, key, value, gate, up), for rules to match"
    )


class ManifestTensor(WireModel):
    """One tensor of a model the module tree cannot describe (what spec_from_module extracts).

    module_type says what it belongs to, for rules and torch_default; fans default to torch's rule
    (>= 2-D) or the size (vectors); running_mean, running_var and num_batches_tracked are buffers.
    """

    name: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$", max_length=1024), AfterValidator(check_tensor_name)
    ]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)]
    module_type: ParameterizedType = "parameter"
    role: Literal["weight", "bias", "running_mean", "running_var", "num_batches_tracked"] = "weight"
    roles: list[ExtraRole] = Field(default_factory=list, max_length=8)
    fan_in: PositiveInt | None = None
    fan_out: PositiveInt | None = None
    hidden_size: PositiveInt | None = Field(None, description="recurrent layers: torch_default's 1/sqrt(hidden)")
    groups: PositiveInt = Field(1, description="convolutions: the initium fan convention counts per group")
    padding_idx: Annotated[int, Field(ge=0)] | None = Field(None, description="embeddings: this row starts at 0")
    head_dim: PositiveInt | None = Field(
        None, description="attention projections: the width of one head (T5's d_kv), for laws that scale by it"
    )
    followed_by: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="the activation the layer's output reaches first, e.g. 'relu' (for auto and relu_bias)"
    )
    parts: ManifestParts | None = Field(
        None, description="a fused tensor's blocks (q/k/v, gate/up), each with its own fans, rule and values"
    )

    @model_validator(mode="after")
    def _check_parts(self) -> ManifestTensor:
        p = self.parts
        if p is None:
            return self
        if self.module_type in _BUILT_IN_PARTS:
            raise ValueError(
                f"parts: module_type {self.module_type!r} already splits its tensors into gates or q/k/v "
                "blocks; drop parts (or use module_type 'linear')"
            )
        if self.role not in ("weight", "bias"):
            raise ValueError(f"parts: a {self.role} buffer starts at a fixed value; drop parts")
        if p.axis >= len(self.shape):
            fix = f"use 0..{len(self.shape) - 1}" if self.shape else "a scalar has none to split; drop parts"
            raise ValueError(f"parts.axis {p.axis} is not a dimension of shape {self.shape}; {fix}")
        if sum(p.sizes) != self.shape[p.axis]:
            raise ValueError(
                f"parts.sizes sum to {sum(p.sizes)} but shape[{p.axis}] is {self.shape[p.axis]}; "
                "give one size per block, covering the whole axis"
            )
        if len(p.roles) != len(p.sizes):
            raise ValueError(
                f"parts.roles has {len(p.roles)} entries for {len(p.sizes)} sizes; give one role per block"
            )
        return self


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
