"""The init policy: an ordered list of rules; for each tensor the last matching rule wins."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from initium.schemas._base import WireModel
from initium.schemas._module import ParameterizedType
from initium.schemas.schemes import SchemeParams

# Roles a rule can target: every parameter is a weight or a bias; recurrent layers add
# `recurrent` (weight_hh, bias_hh) and `projection` (LSTM weight_hr) and one role per gate (LSTM
# input, forget, cell, output; GRU reset, update, new); attention adds query, key, value and
# attention_output; composite blocks (or a spec's own `roles`) add residual_output, residual_norm
# and classifier; norms whose forward multiplies by (1 + weight) add zero_centered; fused gate/up
# projections add gate and up per block. Buffers (running statistics) are not parameters: they always start at torch's
# values and no rule applies to them.
ParamRole = Literal[
    "weight", "bias", "recurrent", "projection",
    "input", "forget", "cell", "output", "reset", "update", "new",
    "query", "key", "value", "attention_output", "residual_output", "residual_norm", "classifier", "scale",
    "zero_centered", "gate", "up",
]  # fmt: skip


class Match(WireModel):
    """What a rule applies to; every given field must match, an empty match matches every parameter."""

    type: ParameterizedType | None = Field(None, description="module type, e.g. 'linear'")
    # A list narrows to tensors that have every role in it: {"type": "lstm", "role": ["recurrent",
    # "weight"]} is weight_hh without bias_hh (issue 18); one string keeps its bytes and request id.
    role: ParamRole | Annotated[list[ParamRole], Field(min_length=1, max_length=8)] | None = Field(
        None, description="'weight', 'bias', a gate or projection role, or a list: the tensor has every role in it"
    )
    name: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="fnmatch glob over the full tensor name, e.g. 'blocks.*.fc2.weight'"
    )

    def roles(self) -> tuple[str, ...]:
        """The roles a tensor needs, all of them, to match (empty: any tensor)."""
        if self.role is None:
            return ()
        return (self.role,) if isinstance(self.role, str) else tuple(self.role)

    def matches_roles(self, roles: Collection[str]) -> bool:
        """Whether a tensor with `roles` (e.g. ('bias', 'recurrent') for bias_hh) has every role asked for."""
        return all(role in roles for role in self.roles())


class FanAxes(WireModel):
    """Which dimensions count as inputs and outputs (Keras input_axes/output_axes, JAX in_axis/out_axis).

    fan_in = prod(shape[in_axes]) * receptive field, fan_out = prod(shape[out_axes]) * receptive
    field, the receptive field being the product of the other dimensions. Negative axes count from
    the end. For weights stored as [in, out] (a transposed layout), use in_axes [0], out_axes [1].
    """

    in_axes: list[int] = Field(min_length=1, max_length=8)
    out_axes: list[int] = Field(min_length=1, max_length=8)


class Rule(WireModel):
    """One policy rule: tensors matching `match` are initialized with `init`."""

    match: Match = Match()
    init: SchemeParams
    fan_axes: FanAxes | None = Field(None, description="compute fans from these axes instead of the layout's")
    packed: Literal["parts", "whole"] = Field(
        "parts",
        description=(
            "a packed tensor (recurrent gates, q/k/v): 'parts' draws each block as its own matrix; 'whole' "
            "uses the whole tensor's fans, and draws it as one matrix when this rule fires on every block "
            "(Keras' one kernel per layer: orthogonal over the whole recurrent kernel)"
        ),
    )


class Lsuv(WireModel):
    """Mishkin and Matas (2016), All you need is a good init: layer-sequential unit variance.

    An orthonormal start for linear and conv weights (start 'orthogonal'; 'policy' keeps the rules'
    schemes), then, layer by layer on the probe batch, each weight is rescaled until its layer's
    output std is within `tolerance` of `target_std`, at most `max_iterations` times.
    """

    target_std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    tolerance: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.1
    max_iterations: Annotated[int, Field(ge=1, le=100)] = 10
    start: Literal["orthogonal", "policy"] = "orthogonal"


# Preset versions are below 2^31 (a signed 32-bit integer, what most stores and languages hold
# exactly): an unbounded one, `house@10^30`, would squat "newest" for good, since versions are
# immutable (issue 16).
MAX_PRESET_VERSION = 2**31 - 1


def _version_in_range(ref: str) -> str:
    _, _, version = ref.partition("@")
    if version and int(version) > MAX_PRESET_VERSION:
        raise ValueError(f"a preset version is at most {MAX_PRESET_VERSION} (2^31 - 1), not {version}")
    return ref


PresetRef = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9-]*(@[0-9]+)?$", max_length=128), AfterValidator(_version_in_range)
]


class Policy(WireModel):
    """A preset and/or ordered rules; the preset's rules come first, so the request's rules override them.

    Later rules override earlier ones, as nanoGPT re-draws c_proj after its Linear rule.
    """

    preset: PresetRef | None = Field(None, description="a preset name, optionally pinned: 'kaiming-relu@1'")
    rules: list[Rule] = Field(default_factory=list, max_length=10_000)
    lsuv: Lsuv | None = Field(None, description="rescale layer by layer to unit output variance (tree specs)")
    fan_convention: Literal["initium", "torch"] = Field(
        "initium",
        description=(
            "initium: grouped and depthwise convs count fan_out per group (torch counts it over all "
            "groups, pytorch/pytorch#23854); torch: torch's numbers exactly"
        ),
    )

    @model_validator(mode="after")
    def _check_not_empty(self) -> Policy:
        if self.preset is None and not self.rules:
            raise ValueError("a policy needs a preset or at least one rule (see GET /v1/presets)")
        return self
