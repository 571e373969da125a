"""The initialization request: spec, policy, seed and dtype."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from initium.schemas._base import WireModel
from initium.schemas.policy import Policy
from initium.schemas.spec import Spec

DType = Literal["float32", "float16", "bfloat16", "float64"]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class InitRequest(WireModel):
    """Everything that determines the bytes of an initialization."""

    spec: Spec
    policy: Policy
    seed: Seed = 0
    dtype: DType = "float32"
