"""What a caller may pass for a request, and the one InitRequest built from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from initium.schemas.request import InitRequest

RequestLike = InitRequest | Mapping[str, Any]
SpecLike = BaseModel | Mapping[str, Any]
# A policy, or a preset's name ("gpt2", "gpt2@1") standing for {"preset": name}, as the CLI takes it.
PolicyLike = SpecLike | str


def build_request(
    request: RequestLike | None = None,
    *,
    spec: SpecLike | None = None,
    policy: PolicyLike | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    slices: Mapping[str, Any] | None = None,
) -> InitRequest:
    """One InitRequest from a whole request, or from its parts; explicit parts override the request's.
    A policy given as a string names a preset."""
    body: dict[str, Any] = {}
    if isinstance(policy, str):
        policy = {"preset": policy}
    if request is not None:
        body = request.model_dump(mode="json") if isinstance(request, InitRequest) else dict(request)
    for key, value in (("spec", spec), ("policy", policy), ("seed", seed), ("dtype", dtype), ("slices", slices)):
        if value is not None:
            body[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    return InitRequest.model_validate(body)
