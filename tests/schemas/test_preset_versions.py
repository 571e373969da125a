"""Preset versions are below 2^31, in a published preset and in a request's preset ref (issue 16:
`house@10^30` was accepted and, versions being immutable, squatted "newest" for good)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from initium.schemas.policy import MAX_PRESET_VERSION, Policy
from initium.schemas.presets import Preset, UnknownPresetError, builtin_presets, resolve_ref

RULES = [{"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]


def test_the_bound_is_a_signed_32_bit_integer() -> None:
    assert MAX_PRESET_VERSION == 2_147_483_647


@pytest.mark.parametrize("version", [0, MAX_PRESET_VERSION + 1, 10**30])
def test_a_preset_version_out_of_range_is_refused_at_version(version: int) -> None:
    with pytest.raises(ValidationError) as raised:
        Preset.model_validate({"name": "house", "version": version, "description": "d", "rules": RULES})
    assert [e["loc"] for e in raised.value.errors()] == [("version",)]


@pytest.mark.parametrize("ref", [f"house@{MAX_PRESET_VERSION + 1}", f"house@{10**30}"])
def test_a_request_ref_past_the_bound_is_refused_at_preset(ref: str) -> None:
    with pytest.raises(ValidationError, match="at most 2147483647") as raised:
        Policy.model_validate({"preset": ref})
    assert [e["loc"] for e in raised.value.errors()] == [("preset",)]


def test_refs_in_range_keep_their_bytes() -> None:
    """Request ids hash the request: a valid ref serializes exactly as before the bound."""
    for ref in ("gpt2", "gpt2@2", f"house@{MAX_PRESET_VERSION}", "kaiming-relu@01"):
        assert Policy.model_validate({"preset": ref}).model_dump_json(exclude_defaults=True) == f'{{"preset":"{ref}"}}'


@pytest.mark.parametrize("ref", ["gpt2@abc", "gpt2@" + "9" * 5000, f"gpt2@{MAX_PRESET_VERSION + 1}", "gpt2@0"])
def test_resolve_ref_names_nothing_for_a_version_no_preset_can_have(ref: str) -> None:
    with pytest.raises(UnknownPresetError, match="has no version") as raised:
        resolve_ref(ref, builtin_presets())
    assert len(str(raised.value)) < 200  # the ref is quoted as an excerpt


def test_resolve_ref_still_resolves_leading_zeros_and_bare_names() -> None:
    assert resolve_ref("gpt2@01", builtin_presets()).ref == "gpt2@1"
    assert resolve_ref("gpt2", builtin_presets()).ref == "gpt2@2"
