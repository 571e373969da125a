"""The initialization request: spec, policy, seed and dtype."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from initium.schemas._base import WireModel
from initium.schemas.policy import Policy
from initium.schemas.spec import Spec

DType = Literal["float32", "float16", "bfloat16", "float64"]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
# [start, stop) along one dimension, as Python slices and torch.narrow count.
Range = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=1)]]


class InitRequest(WireModel):
    """Everything that determines the bytes of an initialization."""

    spec: Spec
    policy: Policy
    seed: Seed = 0
    dtype: DType = "float32"
    slices: dict[str, list[Range]] = Field(
        default_factory=dict,
        max_length=100_000,
        description=(
            "tensor name -> one [start, stop) range per dimension; that tensor is returned as exactly "
            "this part of the full tensor (e.g. one tensor-parallel rank's rows)"
        ),
    )
