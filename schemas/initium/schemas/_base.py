"""The base model every wire type derives from: strict about unknown fields, immutable."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict


class WireModel(BaseModel):
    """A request or response body part; unknown keys are refused so typos never pass silently.

    Strict: lax mode would take `true` for a number (as 1) and "3" for an integer, and the OpenAPI
    document promises neither (schemathesis found both).

    Non-finite floats (a report of a tensor that overflowed its dtype) are written as the tokens
    Infinity, -Infinity and NaN, which pydantic, Python's json and so httpx's Response.json() read back
    as the same floats. pydantic's default writes null, which a float field then refuses: the stored
    report no longer parsed and GET .../report answered 500 (issue 15). Finite values are unchanged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, ser_json_inf_nan="constants")


# A request id (the sha256 of the normalized request) or an artifact's sha256, as hex.
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")]

# JSON has arrays, not tuples, so a pair arrives as a list: lax about its container, strict about
# its numbers.
Pair = Annotated[tuple[int, int], Strict(False)]
