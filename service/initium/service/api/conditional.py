"""Conditional requests (RFC 9110 section 13): entity-tag lists and the If-Match, If-None-Match and
If-Range preconditions, evaluated in the order of section 13.2.2.

The resources served here have a strong ETag and no Last-Modified, so the date preconditions
(If-Unmodified-Since, If-Modified-Since, an If-Range date) cannot be validated: the first two are
ignored, as section 13.2.2 says for a resource without a modification date, and an If-Range date is
false (the whole file is sent, the safe outcome).
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from starlette.datastructures import Headers
from starlette.responses import Response

from initium.service.api.http import error_response

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text (section 8.8.3);
# a list element ends at OWS "," (section 5.6.1). Header values arrive decoded as latin-1.
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(?:,|\Z)')
_EMPTY_ELEMENT = re.compile(r"[ \t]*,")


def entity_tags(value: str) -> list[tuple[bool, str]] | Literal["*"] | None:
    """The field's `*`, or its (weak, opaque-tag) list; None when it does not parse (the caller
    decides what a malformed condition means). Empty list elements are skipped (section 5.6.1.2)."""
    if value.strip(" \t") == "*":
        return "*"
    tags: list[tuple[bool, str]] = []
    at = 0
    while at < len(value):
        empty = _EMPTY_ELEMENT.match(value, at)
        if empty:
            at = empty.end()
            continue
        tag = _ENTITY_TAG.match(value, at)
        if tag is None:
            return None if value[at:].strip(" \t") else tags or None
        tags.append((tag.group(1) is not None, tag.group(2)))
        at = tag.end()
    return tags or None


def _field(headers: Headers, name: str) -> str | None:
    # A list field may arrive as several lines; together they are one comma-separated list (section 5.3).
    lines = headers.getlist(name)
    return ", ".join(lines) if lines else None


def if_match_holds(value: str, opaque: str) -> bool:
    """Section 13.1.1: `*`, or a strong match with the current strong ETag `"opaque"`; a malformed
    field holds nothing, so it fails (a precondition the server cannot confirm is not met)."""
    tags = entity_tags(value)
    return tags == "*" or (tags is not None and any(not weak and tag == opaque for weak, tag in tags))


def if_none_match_holds(value: str, opaque: str) -> bool:
    """Section 13.1.2: false for `*` or a weak match with the current ETag; a malformed field names
    no representation, so it holds (the whole response is the safe answer)."""
    tags = entity_tags(value)
    return tags != "*" and (tags is None or all(tag != opaque for _, tag in tags))


def precondition_status(headers: Headers, opaque: str, method: str) -> Literal[304, 412] | None:
    """Section 13.2.2 steps 1 to 4 for a resource whose current strong ETag is `"opaque"`: 412 when
    If-Match fails, then 304 (GET, HEAD) or 412 (other methods) when If-None-Match fails; None: go on."""
    if_match = _field(headers, "if-match")
    if if_match is not None and not if_match_holds(if_match, opaque):
        return 412
    if_none_match = _field(headers, "if-none-match")
    if if_none_match is not None and not if_none_match_holds(if_none_match, opaque):
        return 304 if method in ("GET", "HEAD") else 412
    return None


def if_range_holds(headers: Headers, opaque: str) -> bool:
    """Section 13.1.5: with no If-Range the Range applies; with one, only when it is exactly the current
    strong ETag (a weak tag, a date or anything else sends the whole representation)."""
    value = headers.get("if-range")
    if value is None:
        return True
    tags = entity_tags(value)
    return isinstance(tags, list) and tags == [(False, opaque)]


def revalidated(headers: Headers, method: str, content: bytes, media_type: str) -> Response:
    """A generated representation (a report, its page) with a strong ETag, the sha256 of its bytes,
    and Cache-Control: no-cache, so a cache keeps it and asks again each time: 304 (no body) when
    If-None-Match names these bytes, 412 when If-Match names others, else 200 with the bytes."""
    opaque = hashlib.sha256(content).hexdigest()
    fields = {"ETag": f'"{opaque}"', "Cache-Control": "no-cache"}
    refused = precondition_status(headers, opaque, method)
    if refused == 304:
        return Response(status_code=304, headers=fields)
    if refused == 412:
        return error_response(
            412,
            "precondition_failed",
            f"If-Match names another version; the current ETag is {fields['ETag']}",
            headers=fields,
        )
    return Response(content, media_type=media_type, headers=fields)
