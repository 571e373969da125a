"""What can be asked for: the scheme and preset listings served by GET /v1/schemes and /v1/presets."""

from __future__ import annotations

from typing import Any

from initium.schemas._base import WireModel
from initium.schemas.presets import Preset
from initium.schemas.schemes import SCHEME_MODELS


class SchemeInfo(WireModel):
    name: str
    description: str
    params_schema: dict[str, Any]


class SchemeList(WireModel):
    schemes: list[SchemeInfo]


class PresetList(WireModel):
    presets: list[Preset]


def scheme_catalog() -> SchemeList:
    return SchemeList(
        schemes=[
            SchemeInfo(
                name=name,
                description=(model.__doc__ or "").strip(),
                params_schema=model.model_json_schema(),
            )
            for name, model in SCHEME_MODELS.items()
        ]
    )
