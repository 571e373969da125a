"""/v1/schemes and /v1/presets: what a policy can ask for."""

from __future__ import annotations

from fastapi import APIRouter, Response

from initium.schemas.catalog import PresetList, SchemeList, scheme_catalog
from initium.schemas.presets import Preset
from initium.service.api.deps import PresetsDep
from initium.service.api.http import body_route_responses, error_responses

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/schemes", response_model=SchemeList, responses=error_responses())
def schemes() -> SchemeList:
    """Every scheme with its description and the JSON Schema of its parameters."""
    return scheme_catalog()


@router.get("/presets", response_model=PresetList, responses=error_responses())
def presets(store: PresetsDep) -> Response:
    """Every preset, built-in and published, with its rules."""
    # The body is serialized once per set of published presets (PresetStore.catalog_json): FastAPI
    # would validate and serialize every rule again on every call (issue 16: 29.8 s with 300,000 rules).
    return Response(store.catalog_json(), media_type="application/json")


@router.get("/presets/{ref}", response_model=Preset, responses=error_responses(404))
def preset(ref: str, store: PresetsDep) -> Preset:
    """One preset: 'name' for its newest version, or 'name@version'; 404 when there is none."""
    return store.lookup(ref)


@router.post("/presets", status_code=201, response_model=Preset, responses=body_route_responses(Preset))
def publish(body: Preset, response: Response, store: PresetsDep) -> Preset:
    """Publish a platform policy; 201 when new, 200 when these exact rules are already published,
    409 when the version exists with other rules (versions are immutable)."""
    preset, created = store.publish(body)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/presets/{preset.ref}"
    return preset
