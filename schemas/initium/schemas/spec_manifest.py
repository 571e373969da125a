"""The manifest form of a spec: a flat list of named tensors, for models the tree cannot describe."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, model_validator

from initium.schemas._base import WireModel
from initium.schemas._module import ExtraRole, ParameterizedType


class ManifestTensor(WireModel):
    """One tensor of a model the module tree cannot describe (what spec_from_module extracts).

    module_type says what it belongs to, for rules and torch_default; fans default to torch's rule
    (>= 2-D) or the size (vectors); running_mean, running_var and num_batches_tracked are buffers.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$", max_length=1024)]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(max_length=8)]
    module_type: ParameterizedType = "parameter"
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
