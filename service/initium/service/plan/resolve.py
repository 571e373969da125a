"""Resolve one tensor of the plan: its rule, its fans and its law, block by block for packed tensors."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TypedDict

from initium.schemas import plan as wire
from initium.schemas._module import MATRIX_TYPES
from initium.schemas.request import InitRequest
from initium.schemas.schemes import SchemeParams
from initium.service.errors import RequestInvalidError
from initium.service.identity import part_name
from initium.service.plan import distributions as d
from initium.service.plan.admissible import check_law
from initium.service.plan.fans import axes_fans
from initium.service.plan.layers import LayerTensor, Part
from initium.service.plan.rules import LabeledRule, last_match
from initium.service.plan.schemes import Geometry, SchemeNotApplicableError, resolve
from initium.service.plan.schemes_structural import choose
from initium.service.plan.tree import Leaf

Blocks = list[tuple[str, tuple[str, ...]]]  # (tensor name, the block's roles), in forward order


@dataclass(frozen=True)
class Structure:
    """The spec's residual structure, counted once before any tensor is resolved."""

    residual_branches: int
    # branch -> its weight matrices, each block of a packed one apart (Fixup's m with count_blocks)
    branch_blocks: dict[str, Blocks]
    deepest_repeat: int | None  # the largest repeat count: the stack's depth for tensors outside it
    first_layer: str | None = None  # the first weight layer's tensor, unless an embedding comes first

    def branch_weights(self, branch: str | None) -> list[str]:
        """The branch's weight matrices' names, in forward order (Fixup's m)."""
        return list(dict.fromkeys(name for name, _ in self.branch_blocks.get(branch or "", [])))


# What counts as a layer reading its input, for "the model's first weight layer".
_LAYER_TYPES = (*MATRIX_TYPES, "embedding", "rnn", "lstm", "gru")


def structure(sites: list[tuple[Leaf, LayerTensor]]) -> Structure:
    blocks: dict[str, Blocks] = {}
    for leaf, lt in sites:
        if leaf.residual is not None:
            keys = blocks.setdefault(leaf.residual, [])
            if lt.role == "weight" and leaf.type in MATRIX_TYPES and len(lt.shape) >= 2:
                name, roles = tensor_name(leaf, lt), tensor_roles(leaf, lt)
                keys += [(name, (*roles, *p.roles)) for p in lt.parts] or [(name, roles)]
    repeats = [leaf.repeats for leaf, _ in sites if leaf.repeats is not None]
    layers = ((leaf, lt) for leaf, lt in sites if lt.role == "weight" and leaf.type in _LAYER_TYPES)
    first = next(((leaf, lt) for leaf, lt in layers if len(lt.shape) >= 2), None)
    first_layer = None if first is None or first[0].type == "embedding" else tensor_name(*first)
    return Structure(len(blocks), blocks, max(repeats) if repeats else None, first_layer)


def tensor_roles(leaf: Leaf, lt: LayerTensor) -> tuple[str, ...]:
    return (lt.role, *lt.roles, *leaf.roles)


def tensor_name(leaf: Leaf, lt: LayerTensor) -> str:
    return ".".join(part for part in (leaf.path, lt.local_name) if part)


@dataclass(frozen=True)
class Block:
    """A tensor, or one part of it, as a scheme sees it."""

    name: str  # what rules' name globs match: always the tensor's full name
    label: str  # how warnings and errors name it: the tensor, or the tensor and its rows
    shape: tuple[int, ...]
    roles: tuple[str, ...]
    layout_fans: tuple[int, int]  # fans under the policy's convention, before any rule's fan_axes


@dataclass
class Context:
    """What resolving every tensor of one request shares: the request, the rules (and which fired),
    and the spec's residual structure."""

    request: InitRequest
    rules: list[LabeledRule]
    structure: Structure
    used: set[str]


def plan_tensor(ctx: Context, leaf: Leaf, lt: LayerTensor, follower: str | None) -> wire.PlannedTensor:
    request = ctx.request
    name = tensor_name(leaf, lt)
    roles = tensor_roles(leaf, lt)
    fans = _layout_fans(lt, request.policy.fan_convention)
    common: dict[str, Any] = {
        "name": name, "shape": list(lt.shape), "dtype": "int64" if lt.integer else request.dtype,
        "module": leaf.path, "module_type": leaf.type, "role": lt.role, "roles": list(roles),
        "residual": leaf.residual, "depth": leaf.depth, "followed_by": follower, "post": list(lt.post),
    }  # fmt: skip
    if lt.buffer_value is not None:
        fixed = d.Constant(lt.buffer_value)
        return wire.PlannedTensor(
            **common, fan_in=lt.fan_in, fan_out=lt.fan_out, rule=None, init=None, distribution=_wire(fixed),
            expected_mean=fixed.mean, expected_std=fixed.std, elementwise=True,
        )  # fmt: skip
    if not lt.parts:
        resolution = _resolve(Block(name, name, lt.shape, roles, fans), leaf, lt, follower, ctx)
        return wire.PlannedTensor(**common, **resolution.fields())
    parts = [_plan_part(name, part, roles, leaf, lt, follower, ctx) for part in lt.parts]
    whole = _whole(ctx, parts, Block(name, name, lt.shape, roles, fans), leaf, lt, follower)
    if whole is not None:
        return wire.PlannedTensor(**common, **whole.fields())
    return _summarize(common, fans, parts)


def _whole(
    ctx: Context, parts: list[wire.PlannedPart], block: Block, leaf: Leaf, lt: LayerTensor, follower: str | None
) -> Resolution | None:
    """The packed tensor as one matrix, when one rule with packed 'whole' fired on every part (Keras
    keeps one kernel per layer: its recurrent kernel is orthogonal as a whole, not gate by gate)."""
    labels = {p.rule for p in parts}
    label = labels.pop() if len(labels) == 1 else None
    if label is None or not any(r.label == label and r.rule.packed == "whole" for r in ctx.rules):
        return None
    resolution = _resolve(block, leaf, lt, follower, ctx)
    return resolution if resolution.labeled is not None and resolution.labeled.label == label else None


def _layout_fans(lt: LayerTensor, convention: str) -> tuple[int, int]:
    if convention == "initium" and lt.initium_fans is not None:
        return lt.initium_fans
    return lt.fan_in, lt.fan_out


@dataclass(frozen=True)
class Resolution:
    """What a block resolved to: the rule that fired, the fans used, the concrete scheme (auto's
    choice in place of auto, with its reason) and the law."""

    labeled: LabeledRule | None
    fans: tuple[int, int]
    init: SchemeParams | None = None
    reason: str | None = None
    dist: d.Distribution | None = None

    def fields(self) -> dict[str, Any]:
        """The plan fields every block shares."""
        dist = self.dist
        return {
            "fan_in": self.fans[0], "fan_out": self.fans[1], "rule": self.labeled.label if self.labeled else None,
            "init": self.init, "reason": self.reason, "distribution": _wire(dist),
            "expected_mean": None if dist is None else dist.mean, "expected_std": None if dist is None else dist.std,
            "elementwise": True if dist is None else dist.elementwise,
        }  # fmt: skip


def _resolve(block: Block, leaf: Leaf, lt: LayerTensor, follower: str | None, ctx: Context) -> Resolution:
    labeled = last_match(ctx.rules, block.name, leaf.type, block.roles)
    if labeled is None:
        return Resolution(None, block.layout_fans)
    ctx.used.add(labeled.label)
    # packed 'whole': a block takes the fans of the tensor it is part of, as Keras counts a gate's.
    fans = _layout_fans(lt, ctx.request.policy.fan_convention) if labeled.rule.packed == "whole" else block.layout_fans
    if labeled.rule.fan_axes is not None:
        axes = labeled.rule.fan_axes
        try:
            fans = axes_fans(block.shape, axes.in_axes, axes.out_axes)
        except ValueError as exc:
            raise RequestInvalidError(
                f"rule {labeled.label} on {block.label}: {exc}", (*labeled.loc, "fan_axes")
            ) from None
    branch = ctx.structure.branch_weights(leaf.residual)
    blocks, key = ctx.structure.branch_blocks.get(leaf.residual or "", []), (block.name, block.roles)
    geometry = Geometry(
        block.shape, *fans, leaf.type, block.roles, lt.groups, lt.hidden_size, (lt.fan_in, lt.fan_out),
        depth=leaf.depth, n_blocks=leaf.repeats or ctx.structure.deepest_repeat, followed_by=follower,
        residual_branches=ctx.structure.residual_branches, branch_layers=len(branch),
        branch_index=branch.index(block.name) if block.name in branch else None, branch_blocks=len(blocks),
        block_index=blocks.index(key) if key in blocks else None,
        first_layer=block.name == ctx.structure.first_layer, head_dim=lt.head_dim,
    )  # fmt: skip
    init, reason = labeled.rule.init, None
    try:
        if init.scheme == "auto":
            init, reason = choose(geometry, init.unknown_follower)
        dist = resolve(init, geometry)
    except SchemeNotApplicableError as exc:
        raise RequestInvalidError(
            f"rule {labeled.label} cannot initialize {block.label}: {exc}; {_narrowing(labeled, block.roles)}",
            (*labeled.loc, "init"),
        ) from None
    # Fields are named as the rule gives them (auto's choice has none the request could change).
    at = (labeled.rule.init, (*labeled.loc, "init"), f"rule {labeled.label} on {block.label}")
    check_law(dist, "int64" if lt.integer else ctx.request.dtype, math.prod(block.shape), *at)
    return Resolution(labeled, fans, init, reason, dist)


def _narrowing(labeled: LabeledRule, roles: tuple[str, ...]) -> str:
    """Advice that works (issue 18): a request's rule that fired on a non-weight, e.g. bias_hh under
    {"type": "lstm", "role": "recurrent"}, narrows to weights by adding the role; match takes a list."""
    match, wanted = labeled.rule.match, labeled.rule.match.roles()
    if labeled.loc[:2] != ("policy", "rules") or "weight" in roles or "weight" in wanted:
        return "narrow the rule's match or pick another scheme"
    narrowed = match.model_dump(mode="json", exclude_none=True) | {"role": [*wanted, "weight"] if wanted else "weight"}
    return f"narrow the rule's match to {json.dumps(narrowed)} or pick another scheme"


def _plan_part(
    name: str, part: Part, roles: tuple[str, ...], leaf: Leaf, lt: LayerTensor, follower: str | None, ctx: Context
) -> wire.PlannedPart:
    convention = ctx.request.policy.fan_convention
    shape = tuple(part.stop - part.start if i == part.axis else n for i, n in enumerate(lt.shape))
    # Under the initium convention a block has its own fans (a gate, or q, k or v, is its own
    # matrix: pytorch/pytorch#166378); torch's convention keeps the whole tensor's.
    fans = (part.fan_in, part.fan_out) if convention == "initium" else (lt.fan_in, lt.fan_out)
    label = f"{part_name(name, part.axis, part.start, part.stop)} ({', '.join(part.roles)})"
    block = Block(name, label, shape, (*roles, *part.roles), fans)
    resolution = _resolve(block, leaf, lt, follower, ctx)
    return wire.PlannedPart(
        rows=(part.start, part.stop), axis=part.axis, roles=list(block.roles), **resolution.fields()
    )


def _summarize(common: dict[str, Any], fans: tuple[int, int], parts: list[wire.PlannedPart]) -> wire.PlannedTensor:
    """The tensor-level view of a packed tensor: the common rule and scheme if the parts share one,
    and the moments of the whole (a mixture of the parts' laws, weighted by their lengths along the axis)."""
    rules = {p.rule for p in parts}
    inits = [p.init for p in parts]
    same_init = all(i == inits[0] for i in inits)
    return wire.PlannedTensor(
        **common, fan_in=fans[0], fan_out=fans[1], rule=rules.pop() if len(rules) == 1 else None,
        init=inits[0] if same_init else None, distribution=None, **_mixture(parts),
        elementwise=all(p.elementwise for p in parts), parts=parts,
    )  # fmt: skip


class _Moments(TypedDict):
    expected_mean: float | None
    expected_std: float | None


def _mixture(parts: list[wire.PlannedPart]) -> _Moments:
    moments = [(p.rows[1] - p.rows[0], p.expected_mean, p.expected_std) for p in parts]
    known = [(w, m, s) for w, m, s in moments if m is not None and s is not None]
    if len(known) < len(moments):
        return {"expected_mean": None, "expected_std": None}
    total = sum(w for w, _, _ in known)
    mean = sum(w * m for w, m, _ in known) / total
    square = sum(w * (s * s + m * m) for w, m, s in known) / total
    return {"expected_mean": mean, "expected_std": math.sqrt(max(0.0, square - mean * mean))}


def _wire(dist: d.Distribution | None) -> wire.Distribution | None:
    return None if dist is None else wire.Distribution(family=dist.family, params=d.distribution_params(dist))


def uncovered(tensors: list[wire.PlannedTensor]) -> list[str]:
    """Parameters, or blocks of packed parameters, that no rule initializes."""
    missing: list[str] = []
    for t in tensors:
        if t.role not in ("weight", "bias"):
            continue
        if t.parts is None:
            missing += [t.name] if t.rule is None and t.distribution is None else []
        else:
            missing += [part_name(t.name, p.axis, *p.rows) for p in t.parts if p.rule is None]
    return missing
