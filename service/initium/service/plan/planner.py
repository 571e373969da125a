"""make_plan: walk the tree, list each layer's tensors, fire the rules, resolve each scheme."""

from __future__ import annotations

import math
from dataclasses import dataclass

from initium.schemas import plan as wire
from initium.schemas.request import InitRequest
from initium.service.errors import LimitExceededError, RequestInvalidError
from initium.service.identity import ALGORITHM, request_id
from initium.service.init import distributions as d
from initium.service.init.schemes import Geometry, SchemeNotApplicableError, resolve
from initium.service.plan.fans import axes_fans
from initium.service.plan.layers import LayerTensor, get_layer
from initium.service.plan.rules import LabeledRule, effective_rules, last_match
from initium.service.plan.tree import Leaf, describe_activation, followed_by, walk

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for on this server."""

    max_parameters: int = 20_000_000_000
    max_tensors: int = 1_000_000


def make_plan(request: InitRequest, limits: Limits | None = None) -> wire.Plan:
    """Resolve every tensor of `request`; raises RequestInvalidError or LimitExceededError."""
    pinned, rules = effective_rules(request.policy)
    leaves = walk(request.spec)
    used: set[str] = set()
    tensors: list[wire.PlannedTensor] = []
    for index, leaf in enumerate(leaves):
        follower = describe_activation(followed_by(leaves, index))
        for lt in get_layer(leaf.module.type)(leaf.module):
            tensors.append(_plan_tensor(request, leaf, lt, follower, rules, used))
    tensors = _apply_slices(tensors, request.slices)
    _check_limits(tensors, limits or Limits())
    uncovered = [t.name for t in tensors if t.rule is None and t.role in ("weight", "bias")]
    unused = [r.label for r in rules if r.label not in used and r.label.startswith("policy.")]
    return wire.Plan(
        request_id=request_id(request, pinned),
        algorithm=ALGORITHM,
        tensors=tensors,
        totals=_totals(tensors),
        preset=pinned,
        unused_rules=unused,
        uncovered=uncovered,
        warnings=_warnings(uncovered, unused),
    )


def _plan_tensor(
    request: InitRequest,
    leaf: Leaf,
    lt: LayerTensor,
    follower: str | None,
    rules: list[LabeledRule],
    used: set[str],
) -> wire.PlannedTensor:
    name = f"{leaf.path}.{lt.local_name}"
    labeled = None if lt.buffer_value is not None else last_match(rules, name, leaf.module.type, lt.role)
    fan_in, fan_out = _fans(name, lt, labeled, request.policy.fan_convention)
    geometry = Geometry(lt.shape, fan_in, fan_out, leaf.module.type, lt.role, lt.groups)
    dist = _distribution(name, lt, labeled, geometry)
    if labeled is not None:
        used.add(labeled.label)
    return wire.PlannedTensor(
        name=name,
        shape=list(lt.shape),
        dtype="int64" if lt.integer else request.dtype,
        module=leaf.path,
        module_type=leaf.module.type,
        role=lt.role,
        fan_in=fan_in,
        fan_out=fan_out,
        followed_by=follower,
        rule=labeled.label if labeled else None,
        init=labeled.rule.init if labeled else None,
        distribution=None
        if dist is None
        else wire.Distribution(family=dist.family, params=d.distribution_params(dist)),
        expected_mean=None if dist is None else dist.mean,
        expected_std=None if dist is None else dist.std,
        elementwise=True if dist is None else dist.elementwise,
        post=list(lt.post),
    )


def _fans(name: str, lt: LayerTensor, labeled: LabeledRule | None, convention: str) -> tuple[int, int]:
    """The layout's fans (torch's, or per group under the initium convention), or the rule's axes."""
    if labeled is not None and labeled.rule.fan_axes is not None:
        axes = labeled.rule.fan_axes
        try:
            return axes_fans(lt.shape, axes.in_axes, axes.out_axes)
        except ValueError as exc:
            raise RequestInvalidError(f"rule {labeled.label} on {name}: {exc}", (*labeled.loc, "fan_axes")) from None
    if convention == "initium":
        # torch counts a grouped conv's fan_out over all groups although each output channel
        # only reaches its own group (pytorch/pytorch#23854): a depthwise conv's fan_out would be
        # channels times too large.
        return lt.fan_in, lt.fan_out // lt.groups
    return lt.fan_in, lt.fan_out


def _distribution(name: str, lt: LayerTensor, labeled: LabeledRule | None, geometry: Geometry) -> d.Distribution | None:
    if lt.buffer_value is not None:
        return d.Constant(lt.buffer_value)
    if labeled is None:
        return None
    try:
        return resolve(labeled.rule.init, geometry)
    except SchemeNotApplicableError as exc:
        raise RequestInvalidError(
            f"rule {labeled.label} cannot initialize {name}: {exc}; narrow the rule's match "
            '(e.g. add "role": "weight") or pick another scheme',
            (*labeled.loc, "init"),
        ) from None


def planned_distribution(tensor: wire.PlannedTensor) -> d.Distribution:
    """Rebuild the sampler's distribution from a planned tensor (the worker's side of the plan)."""
    if tensor.distribution is None:
        raise ValueError(f"tensor {tensor.name} has no rule; it cannot be generated")
    return d.from_params(tensor.distribution.family, tensor.distribution.params)


def _apply_slices(
    tensors: list[wire.PlannedTensor], slices: dict[str, list[tuple[int, int]]]
) -> list[wire.PlannedTensor]:
    """Attach each requested slice to its tensor, refusing names and ranges the plan does not have."""
    by_name = {t.name: t for t in tensors}
    for name, ranges in slices.items():
        loc: tuple[str | int, ...] = ("slices", name)
        tensor = by_name.get(name)
        if tensor is None:
            known = ", ".join(list(by_name)[:8]) + (" ..." if len(by_name) > 8 else "")
            raise RequestInvalidError(f"slices names {name!r}, which is not a tensor of this spec ({known})", loc)
        if len(ranges) != len(tensor.shape):
            raise RequestInvalidError(
                f"{name} has {len(tensor.shape)} dimensions {tensor.shape}; give one [start, stop) per dimension",
                loc,
            )
        for dim, ((start, stop), size) in enumerate(zip(ranges, tensor.shape, strict=True)):
            if not 0 <= start < stop <= size:
                raise RequestInvalidError(
                    f"{name} dimension {dim} has size {size}; need 0 <= start < stop <= {size}, got [{start}, {stop})",
                    (*loc, dim),
                )
        by_name[name] = tensor.model_copy(update={"slice": [(start, stop) for start, stop in ranges]})
    return list(by_name.values())


def _generated_elements(t: wire.PlannedTensor) -> int:
    # An elementwise slice is generated alone; any other scheme draws the whole tensor first.
    return math.prod(t.output_shape() if t.elementwise else t.shape)


def _totals(tensors: list[wire.PlannedTensor]) -> wire.PlanTotals:
    counts = [math.prod(t.output_shape()) for t in tensors]
    nbytes = sum(n * _ITEMSIZE[t.dtype] for n, t in zip(counts, tensors, strict=True))
    params = sum(n for n, t in zip(counts, tensors, strict=True) if t.role in ("weight", "bias"))
    return wire.PlanTotals(tensors=len(tensors), parameters=params, bytes=nbytes)


def _check_limits(tensors: list[wire.PlannedTensor], limits: Limits) -> None:
    if len(tensors) > limits.max_tensors:
        raise LimitExceededError(
            f"the spec has {len(tensors)} tensors; this server allows at most {limits.max_tensors}",
            ("spec",),
        )
    total = sum(_generated_elements(t) for t in tensors)
    if total > limits.max_parameters:
        raise LimitExceededError(
            f"the spec has {total:,} elements; this server allows at most {limits.max_parameters:,} "
            "(INITIUM_MAX_PARAMETERS)",
            ("spec",),
        )


def _warnings(uncovered: list[str], unused: list[str]) -> list[str]:
    warnings = []
    if uncovered:
        shown = ", ".join(uncovered[:10]) + (" ..." if len(uncovered) > 10 else "")
        warnings.append(f"{len(uncovered)} parameters matched no rule: {shown}")
    warnings += [f"{label} matched no tensor" for label in unused]
    return warnings
