"""/v1/plans: the dry run that shows what a request would generate, generating nothing."""

from __future__ import annotations

from fastapi import APIRouter

from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.api.deps import LimitsDep, PresetsDep
from initium.service.api.http import error_responses
from initium.service.plan.planner import make_plan

router = APIRouter(prefix="/v1/plans", tags=["plans"])


@router.post("", response_model=Plan, responses=error_responses(400, 413, 422))
def plan(request: InitRequest, limits: LimitsDep, presets: PresetsDep) -> Plan:
    """Every tensor with its shape, fans, rule, scheme, params and expected moments; uncovered
    parameters and unused rules are listed as warnings rather than refused."""
    return make_plan(request, limits, presets.all())
