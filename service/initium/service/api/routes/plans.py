"""/v1/plans: the dry run that shows what a request would generate, generating nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.api.deps import LimitsDep, PlanSlotsDep, PresetsDep
from initium.service.api.http import error_responses
from initium.service.api.plan_download import plan_response
from initium.service.plan.planner import make_plan

router = APIRouter(prefix="/v1/plans", tags=["plans"])

_DOWNLOAD = (
    "The plan. One whose JSON passes INITIUM_MAX_PLAN_INLINE_BYTES (default 8 MiB) comes as a download: "
    "the same JSON, streamed (no Content-Length) with Content-Disposition: attachment; "
    'filename="plan-<request_id>.json"'
)


@router.post(
    "", response_model=Plan, responses={200: {"description": _DOWNLOAD}, **error_responses(400, 413, 422, 503, 507)}
)
def plan(request: InitRequest, limits: LimitsDep, presets: PresetsDep, slots: PlanSlotsDep, http: Request) -> Response:
    """Every tensor with its shape, fans, rule, scheme, params and expected moments; uncovered
    parameters and unused rules are listed as warnings rather than refused.

    A plan whose JSON is larger than INITIUM_MAX_PLAN_INLINE_BYTES is streamed as an attachment
    (the same bytes), so the API never holds a large plan's JSON whole; planning itself is bounded by
    INITIUM_MAX_TENSORS, INITIUM_MAX_NAME_BYTES and INITIUM_MAX_PLAN_SECONDS (413), and at most
    INITIUM_MAX_CONCURRENT_PLANS requests plan at once (503 with Retry-After when no slot frees
    within a few seconds)."""
    settings = http.app.state.settings
    with slots.held():  # until the plan is answered whole or spooled: see [Note: planning slots]
        planned = make_plan(request, limits, presets.all())
        return plan_response(planned, settings.max_plan_inline_bytes, settings.data_dir)
