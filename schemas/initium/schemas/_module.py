"""The base of every spec module: names, extra roles, and the names torch reserves."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from initium.schemas._base import WireModel

# A child's name becomes one dotted component of every tensor name below it, as in torch's
# named_modules(); a dot would split it, and a leading digit would collide with the index
# names torch gives unnamed children.
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
IntOrTuple = int | list[int]
# safetensors' header keeps its metadata under this key: a tensor of that name is lost, and with it
# the file's provenance, and the file no longer loads (issue 16).
RESERVED_TENSOR_NAMES = frozenset({"__metadata__"})


def check_tensor_name(name: str) -> str:
    """`name`, unless safetensors reserves it (ValueError: the 422 names the field)."""
    if name in RESERVED_TENSOR_NAMES:
        raise ValueError(f"{name!r} is safetensors' reserved header key, not a tensor name; rename the tensor")
    return name


# Roles a module can add to its tensors, for rules to match: composite blocks tag their residual
# output projections and last norms; a hand-written spec can tag its own layers the same way.
# zero_centered marks a norm whose forward multiplies by (1 + weight) (Gemma's RMSNorm): its weight
# is an offset from a gain of 1, so it starts at 0. gate and up are the blocks of a fused gate/up
# projection (Phi-3's gate_up_proj).
ExtraRole = Literal[
    "residual_output", "residual_norm", "attention_output", "query", "key", "value", "classifier", "scale",
    "zero_centered", "gate", "up",
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


# Module types by what their weights do, for presets, schemes and the planner (one list each).
WEIGHTED_SUM_TYPES = (
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
)  # fmt: skip
# MATRIX_TYPES: the weights a residual branch is made of (Fixup's m layers).
MATRIX_TYPES = (*WEIGHTED_SUM_TYPES, "multihead_attention")
NORM_TYPES = (
    "layer_norm", "rms_norm", "group_norm", "batch_norm1d", "batch_norm2d", "batch_norm3d",
    "instance_norm1d", "instance_norm2d", "instance_norm3d",
)  # fmt: skip

# The module types that own parameters: what a rule's match.type and a manifest's module_type name.
ParameterizedType = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "embedding", "layer_norm", "rms_norm", "group_norm",
    "batch_norm1d", "batch_norm2d", "batch_norm3d", "instance_norm1d", "instance_norm2d", "instance_norm3d",
    "rnn", "lstm", "gru", "multihead_attention", "parameter",
]  # fmt: skip
