"""A pydantic error's `loc` as the JSON path of the field in the request, without union tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Loc = list[str | int]
NO_INPUT: Any = object()  # json_path's error_input when the error carries none


def json_path(loc: Sequence[str | int], document: Any, error_input: Any = NO_INPUT, missing: bool = False) -> Loc:
    """The parts of `loc` that index into `document`, the JSON the model was validated from.

    pydantic puts a union's tag into `loc`: the discriminator value of a tagged union
    (["modules", 0, "linear", "in_features"]) and, for a plain union, the member it tried
    ("literal['weight', ...]", "function-after[...]"); none of those is a key of the request
    (issue 18). Every part but a `missing` error's last one exists in `document`; where two walks
    would fit (a tag equal to a key), the one that ends at the error's `error_input` wins, then the
    first that fits at all. Without a walk that fits (a loc outside the document), `loc` comes back
    unchanged.
    """
    found = _walk(list(loc), document, error_input, missing)
    if found is None and error_input is not NO_INPUT:  # a `mode="before"` validator rewrote the input
        found = _walk(list(loc), document, NO_INPUT, missing)
    return list(loc) if found is None else found


def _walk(rest: list[str | int], node: Any, error_input: Any, missing: bool) -> Loc | None:
    if not rest:
        return [] if error_input is NO_INPUT or _same(node, error_input) else None
    part, tail = rest[0], rest[1:]
    if _has(node, part):
        found = _walk(tail, _child(node, part), error_input, missing)
        if found is not None:
            return [part, *found]
    if missing and not tail and isinstance(node, dict) and part not in node:
        # The error's input is the object that lacks the field: the walk ends at it.
        return [part] if error_input is NO_INPUT or _same(node, error_input) else None
    # A union tag is skipped, the walk staying on this node; only the error's input can show that
    # the last part is one (a model validator's error on a tagged member).
    if isinstance(part, str) and (tail or error_input is not NO_INPUT):
        return _walk(tail, node, error_input, missing)
    return None


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node)


def _child(node: Any, part: str | int) -> Any:
    return node[part]


def _same(node: Any, value: Any) -> bool:
    # The error's input is the very object validated (identity); equality covers copies.
    return node is value or bool(node == value)
