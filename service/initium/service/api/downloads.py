"""Serving a stored file: streamed through the API from the artifact store, the sha256 as its ETag,
conditional requests (If-Match, If-None-Match) and one byte range on request (Range, If-Range), so a
dropped download resumes where it stopped and a cached copy is revalidated without a transfer.

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
from fastapi.responses import StreamingResponse
from starlette.datastructures import Headers

from initium.service.api.conditional import if_range_holds, precondition_status
from initium.service.api.http import error_response
from initium.service.jobs.submit import StoredFile
from initium.service.write.artifacts import Artifacts

# RFC 9110 section 14.1.2: int-range = first-pos "-" [ last-pos ], suffix-range = "-" suffix-length,
# positions 1*DIGIT (ASCII digits only: `\d` would take any Unicode digit).
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)", re.ASCII)
_SUFFIX_RANGE = re.compile(r"-([0-9]+)", re.ASCII)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
# Past any file's size, and short enough for int(): a position of 5,000 digits would pass Python's
# int-string limit (ValueError) if converted as it stands.
_HUGE = 10**18
IMMUTABLE = "public, max-age=31536000, immutable"


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) < 19 else _HUGE


def _range_specs(value: str) -> list[str] | None:
    """The range-specs of a `bytes` ranges-specifier (section 14.1.1), None for another unit or a
    field that does not parse; empty list elements are skipped (section 5.6.1.2)."""
    unit, equals, ranges = value.strip(" \t").partition("=")
    if not equals or not _TOKEN.fullmatch(unit) or unit.lower() != "bytes":
        return None
    specs = [spec.strip(" \t") for spec in ranges.split(",")]
    specs = [spec for spec in specs if spec]
    return specs or None


def byte_range(value: str | None, size: int) -> tuple[int, int] | Literal[False] | None:
    """[start, end) of a single-range Range field, False when it cannot be satisfied (a 416), None for
    the whole file: no field, one the grammar refuses (RFC 9110 section 14.1.1: any unit but bytes, a
    spec that is not int-range or suffix-range, last-pos before first-pos, non-ASCII) or several
    ranges, all of which a server may ignore (section 14.2)."""
    specs = _range_specs(value) if value is not None else None
    if specs is None or len(specs) != 1:
        return None
    if suffix := _SUFFIX_RANGE.fullmatch(specs[0]):
        length = _position(suffix.group(1))
        return (max(size - length, 0), size) if length > 0 and size > 0 else False
    if (int_range := _INT_RANGE.fullmatch(specs[0])) is None:
        return None
    first, last = int_range.groups()
    stripped_first, stripped_last = first.lstrip("0") or "0", last.lstrip("0") or "0"
    if last and (len(stripped_last), stripped_last) < (len(stripped_first), stripped_first):
        return None  # last-pos before first-pos: an invalid int-range
    start = _position(first)
    if start >= size:
        return False
    return start, size if not last else min(_position(last) + 1, size)


def serve_file(
    artifacts: Artifacts, stored: StoredFile, headers: Headers, method: str, filename: str, media_type: str
) -> Response:
    """The file's answer under RFC 9110 section 13.2.2's order: 412 when If-Match fails, 304 when
    If-None-Match names the current ETag, then the requested range (206; 416 past the end) when
    If-Range is absent or names the current ETag, else the whole file (200). HEAD answers the same
    status and headers without reading the file; Range is a GET's alone (section 14.2). The URL is
    content-addressed, so the bytes behind it never change and may be cached for good."""
    etag = f'"{stored.sha256}"'
    refused = precondition_status(headers, stored.sha256, method)
    if refused == 304:  # section 15.4.5: the validator and caching fields a 200 would carry
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
    if refused == 412:
        message = f"If-Match names no current version of this file; its ETag is {etag} (the sha256 the job lists)"
        return error_response(412, "precondition_failed", message, headers={"ETag": etag})
    ranged = method == "GET" and if_range_holds(headers, stored.sha256)
    wanted = byte_range(headers.get("range"), stored.size) if ranged else None
    if wanted is False:
        message = f"the Range starts past the end of this file, which has {stored.size:,} bytes"
        unsatisfied = {"Content-Range": f"bytes */{stored.size}"}
        return error_response(416, "range_not_satisfiable", message, headers=unsatisfied)
    fields = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    start, end = wanted or (0, stored.size)
    if wanted is not None:
        fields["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    fields["Content-Length"] = str(end - start)
    status = 200 if wanted is None else 206
    if method == "HEAD":  # the fields a GET would send (section 9.3.2), and no read of the artifact
        return Response(status_code=status, media_type=media_type, headers=fields)
    # The whole file is one unranged read (S3: a plain GET), a range a ranged one.
    body = artifacts.read(stored.job_id, stored.name, *(() if wanted is None else wanted))
    return StreamingResponse(body, status_code=status, media_type=media_type, headers=fields)
