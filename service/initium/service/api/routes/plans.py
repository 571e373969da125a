"""/v1/plans: the dry run that shows what a request would generate, generating nothing."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.api.deps import LimitsDep, PresetsDep
from initium.service.api.http import error_responses
from initium.service.plan.output import plan_json_chunks, release_plan
from initium.service.plan.planner import make_plan

router = APIRouter(prefix="/v1/plans", tags=["plans"])

_DOWNLOAD = (
    "The plan. One whose JSON passes INITIUM_MAX_PLAN_INLINE_BYTES (default 8 MiB) comes as a download: "
    "the same JSON, streamed (no Content-Length) with Content-Disposition: attachment; "
    'filename="plan-<request_id>.json"'
)


@router.post("", response_model=Plan, responses={200: {"description": _DOWNLOAD}, **error_responses(400, 413, 422)})
def plan(request: InitRequest, limits: LimitsDep, presets: PresetsDep, http: Request) -> Response:
    """Every tensor with its shape, fans, rule, scheme, params and expected moments; uncovered
    parameters and unused rules are listed as warnings rather than refused.

    A plan whose JSON is larger than INITIUM_MAX_PLAN_INLINE_BYTES is streamed as an attachment
    (the same bytes), so the API never holds a large plan's JSON whole; planning itself is bounded by
    INITIUM_MAX_TENSORS, INITIUM_MAX_NAME_BYTES and INITIUM_MAX_PLAN_SECONDS (413)."""
    planned = make_plan(request, limits, presets.all())
    return plan_response(planned, http.app.state.settings.max_plan_inline_bytes)


def plan_response(plan: Plan, inline_bytes: int) -> Response:
    """The plan's JSON whole when it fits in `inline_bytes`, else streamed as a download; at most
    `inline_bytes` plus one batch of it is held at once."""
    chunks = plan_json_chunks(plan)
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size > inline_bytes:
            disposition = f'attachment; filename="plan-{plan.request_id}.json"'
            return StreamingResponse(
                chain(head, chunks, _released(plan)),
                media_type="application/json",
                headers={"Content-Disposition": disposition},
            )
    return Response(b"".join(head), media_type="application/json")


def _released(plan: Plan) -> Iterator[bytes]:
    """Nothing to send: frees the streamed plan a batch at a time once it is sent (release_plan)."""
    release_plan(plan)
    yield from ()
