"""The base model every wire type derives from: strict about unknown fields, immutable."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """A request or response body part; unknown keys are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# A request id (the sha256 of the normalized request) or an artifact's sha256, as hex.
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")]
