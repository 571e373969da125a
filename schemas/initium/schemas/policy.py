"""The init policy: an ordered list of rules; for each tensor the last matching rule wins."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from initium.schemas._base import WireModel
from initium.schemas.schemes import SchemeParams

# Roles a rule can target. Buffers (batch-norm running statistics) are not parameters: they
# always start at torch's values and no rule applies to them.
ParamRole = Literal["weight", "bias"]
ParameterizedType = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "embedding", "layer_norm",
    "batch_norm1d", "batch_norm2d", "batch_norm3d",
]  # fmt: skip


class Match(WireModel):
    """What a rule applies to; every given field must match, an empty match matches every parameter."""

    type: ParameterizedType | None = Field(None, description="module type, e.g. 'linear'")
    role: ParamRole | None = Field(None, description="'weight' or 'bias'")
    name: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        None, description="fnmatch glob over the full tensor name, e.g. 'blocks.*.fc2.weight'"
    )


class Rule(WireModel):
    """One policy rule: tensors matching `match` are initialized with `init`."""

    match: Match = Match()
    init: SchemeParams


PresetRef = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*(@[0-9]+)?$", max_length=128)]


class Policy(WireModel):
    """A preset and/or ordered rules; the preset's rules come first, so the request's rules override them.

    Later rules override earlier ones, as nanoGPT re-draws c_proj after its Linear rule.
    """

    preset: PresetRef | None = Field(None, description="a preset name, optionally pinned: 'kaiming-relu@1'")
    rules: list[Rule] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _check_not_empty(self) -> Policy:
        if self.preset is None and not self.rules:
            raise ValueError("a policy needs a preset or at least one rule (see GET /v1/presets)")
        return self
