"""Serving a stored file: streamed through the API from the artifact store, the sha256 as its ETag,
one byte range on request (Range, If-Range), so a dropped download resumes where it stopped.

[Note: downloads stream through the API] The alternative, a redirect to a presigned S3 URL, would
take the bytes off the API's network path but make the URL's lifetime, the store's reachability from
clients and S3's own ETag (an MD5, not the sha256) part of the contract. Streaming keeps one
contract for both stores: the same URL, an ETag that is the sha256 the job status lists, and Range
answered by the store (a local seek, or S3's ranged GET).
"""

from __future__ import annotations

import re
from typing import Literal

from fastapi import Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.datastructures import Headers

from initium.service.jobs.submit import StoredFile
from initium.service.write.artifacts import Artifacts

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(value: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """[start, end) of a single-range header, None for the whole file (no header, a malformed one or
    several ranges, which a server may ignore: RFC 9110 section 14.2), False when unsatisfiable."""
    match = _RANGE.match((value or "").replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(size - int(last), 0), size
        return (start, end) if int(last) > 0 and size > 0 else False
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size:
        return False
    return (start, end) if start < end else None


def serve_file(artifacts: Artifacts, stored: StoredFile, headers: Headers, filename: str, media_type: str) -> Response:
    """The whole file (200) or the requested range (206; 416 when past the end). A Range is honoured
    without If-Range, or when If-Range names this file's ETag; the URL is content-addressed, so the
    bytes behind it never change and may be cached for good."""
    etag = f'"{stored.sha256}"'
    common = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable",
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if_range = headers.get("if-range")
    wanted = byte_range(headers.get("range"), stored.size) if if_range in (None, etag) else None
    if wanted is False:
        return PlainTextResponse(status_code=416, headers={"Content-Range": f"bytes */{stored.size}"})
    if wanted is None:
        body = artifacts.read(stored.job_id, stored.name)
        return StreamingResponse(body, media_type=media_type, headers={**common, "Content-Length": str(stored.size)})
    start, end = wanted
    ranged = {**common, "Content-Length": str(end - start), "Content-Range": f"bytes {start}-{end - 1}/{stored.size}"}
    body = artifacts.read(stored.job_id, stored.name, start, end)
    return StreamingResponse(body, status_code=206, media_type=media_type, headers=ranged)
