"""/v1/schemes and /v1/presets: what a policy can ask for."""

from __future__ import annotations

from fastapi import APIRouter

from initium.schemas.catalog import PresetList, SchemeList, preset_catalog, scheme_catalog

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/schemes", response_model=SchemeList)
def schemes() -> SchemeList:
    """Every scheme with its description and the JSON Schema of its parameters."""
    return scheme_catalog()


@router.get("/presets", response_model=PresetList)
def presets() -> PresetList:
    """Every named, versioned preset with its rules."""
    return preset_catalog()
