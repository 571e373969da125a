"""The base model every wire type derives from: strict about unknown fields, immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireModel(BaseModel):
    """A request or response body part; unknown keys are refused so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)
