"""/v1/plans: the dry run that shows what a request would generate, generating nothing."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.api.deps import LimitsDep, PlanSlotsDep, PresetsDep
from initium.service.api.http import error_responses
from initium.service.errors import volume_full_as_507
from initium.service.plan.output import plan_json_chunks, release_plan
from initium.service.plan.planner import make_plan

router = APIRouter(prefix="/v1/plans", tags=["plans"])

_DOWNLOAD = (
    "The plan. One whose JSON passes INITIUM_MAX_PLAN_INLINE_BYTES (default 8 MiB) comes as a download: "
    "the same JSON, streamed (no Content-Length) with Content-Disposition: attachment; "
    'filename="plan-<request_id>.json"'
)
# What a download reads from its spooled file per step: a stalled client holds about this much.
READ_BYTES = 256 * 1024


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


def plan_response(plan: Plan, inline_bytes: int, spool_dir: Path) -> Response:
    """The plan's JSON whole when it fits in `inline_bytes`, else a download of the same bytes.

    A download is first written to an anonymous file in `spool_dir` (the data directory), the plan
    is freed (release_plan) and the file is streamed READ_BYTES at a time: a client that reads
    slowly or never holds a file descriptor and one read, not the plan (issue 16: 350 MB per
    stalled 100,000-tensor plan). The data directory, not the system's temp dir, because that is
    often a tmpfs, whose files are memory; the data volume is the one the operator sized and
    /readyz watches. A full volume is a 507 (volume_full_as_507)."""
    chunks = plan_json_chunks(plan)
    head: list[bytes] = []
    size = 0
    for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size > inline_bytes:
            spooled = _spool(chain(head, chunks), spool_dir)
            head.clear()
            release_plan(plan)
            disposition = f'attachment; filename="plan-{plan.request_id}.json"'
            return StreamingResponse(
                _read(spooled), media_type="application/json", headers={"Content-Disposition": disposition}
            )
    return Response(b"".join(head), media_type="application/json")


def _spool(chunks: Iterable[bytes], directory: Path) -> IO[bytes]:
    """`chunks` written to a file with no name (O_TMPFILE where the filesystem has it, else
    unlinked at once: tempfile.TemporaryFile), rewound; nothing is left behind however the
    process ends."""
    spooled = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115  # closed by _read, or here on failure
    try:
        with volume_full_as_507("a plan's download"):
            for chunk in chunks:
                spooled.write(chunk)
            spooled.flush()
        spooled.seek(0)
    except BaseException:
        spooled.close()
        raise
    return spooled


def _read(spooled: IO[bytes]) -> Iterator[bytes]:
    """The file's bytes, READ_BYTES at a time; the file is closed when they are sent, or when the
    response is dropped (a client that went away: the generator is closed)."""
    with spooled:
        while chunk := spooled.read(READ_BYTES):
            yield chunk
