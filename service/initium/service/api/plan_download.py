"""A plan's answer: its JSON whole, or past INITIUM_MAX_PLAN_INLINE_BYTES a download of the same
bytes spooled to a nameless file first (issue 16), for POST /v1/plans."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import IO

from fastapi import Response
from fastapi.responses import StreamingResponse

from initium.schemas.plan import Plan
from initium.service.errors import volume_full_as_507
from initium.service.plan.output import plan_json_chunks, release_plan

# What a download reads from its spooled file per step: a stalled client holds about this much.
READ_BYTES = 256 * 1024


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
