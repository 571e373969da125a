"""make_plan: walk the tree, list each layer's tensors, fire the rules, resolve each scheme."""

from __future__ import annotations

import math
from collections.abc import Mapping

from initium.schemas import plan as wire
from initium.schemas._module import MATRIX_TYPES
from initium.schemas.presets import Preset
from initium.schemas.request import InitRequest
from initium.schemas.spec import Manifest, Spec
from initium.schemas.wording import count
from initium.service.errors import LimitExceededError, RequestInvalidError
from initium.service.identity import ALGORITHM, request_id
from initium.service.plan import layers_packed  # noqa: F401  (registers recurrent and attention layers)
from initium.service.plan.bounds import Deadline, check_size, collector_paused
from initium.service.plan.layers import LayerTensor, get_layer
from initium.service.plan.limits import Limits
from initium.service.plan.manifest import manifest_followers, manifest_sites
from initium.service.plan.output import check_headers, provenance_metadata, shard_files, tensor_nbytes
from initium.service.plan.resolve import Context, plan_tensor, structure, uncovered
from initium.service.plan.rules import effective_rules
from initium.service.plan.schemes_structural import UNKNOWN_REASON
from initium.service.plan.tree import Leaf, describe_activation, followed_by, walk


def make_plan(
    request: InitRequest, limits: Limits | None = None, presets: Mapping[tuple[str, int], Preset] | None = None
) -> wire.Plan:
    """Resolve every tensor of `request`; raises RequestInvalidError or LimitExceededError (a spec
    past the server's limits, counted before planning; planning past its deadline; an output file
    whose safetensors header would pass the readers' limit).

    `presets`: every preset the policy may name (built-in and published); default the built-ins.
    """
    with collector_paused():
        return _make_plan(request, limits or Limits(), presets)


def _make_plan(request: InitRequest, limits: Limits, presets: Mapping[tuple[str, int], Preset] | None) -> wire.Plan:
    deadline = Deadline(limits.max_plan_seconds)
    pinned, rules = effective_rules(request.policy, presets)
    if request.policy.lsuv is not None and isinstance(request.spec, Manifest):
        raise RequestInvalidError(
            "LSUV runs the network to rescale it, and a manifest has no forward pass; send a tree spec",
            ("policy", "lsuv"),
        )
    check_size(request.spec, limits)
    sites = _sites(request.spec, deadline)
    ctx = Context(request, rules, structure([(leaf, lt) for _, leaf, lt in sites]), set())
    tensors = [plan_tensor(ctx, leaf, lt, follower) for follower, leaf, lt in deadline.each(sites)]
    used = ctx.used
    _check_unique_names(tensors)
    tensors = _apply_slices(tensors, request.slices)
    _check_limits(tensors, limits)
    rid = request_id(request, pinned)
    shards = shard_files(tensors, request.output.format, request.output.max_shard_bytes)
    check_headers(tensors, shards, request.output, provenance_metadata(rid, request.seed), deadline.check)
    missing = uncovered(tensors)
    unused = [r.label for r in rules if r.label not in used and r.label.startswith("policy.")]
    return wire.Plan(
        request_id=rid,
        algorithm=ALGORITHM,
        tensors=tensors,
        totals=_totals(tensors),
        shards=shards,
        preset=pinned,
        unused_rules=unused,
        uncovered=missing,
        warnings=_warnings(missing, unused, tensors),
    )


def _sites(spec: Spec | Manifest, deadline: Deadline) -> list[tuple[str | None, Leaf, LayerTensor]]:
    """Every tensor to plan: (the activation that follows it, its leaf, the layer's entry)."""
    if isinstance(spec, Manifest):
        followers = manifest_followers(spec)
        return [(followers[i], leaf, lt) for i, (leaf, lt) in enumerate(deadline.each(manifest_sites(spec)))]
    leaves = walk(spec)
    return [
        (describe_activation(followed_by(leaves, i)), leaf, lt)
        for i, leaf in enumerate(deadline.each(leaves))
        for lt in get_layer(leaf.type)(leaf.module)
    ]


def _check_unique_names(tensors: list[wire.PlannedTensor]) -> None:
    """Every state_dict key once: two tensors under one name would be one tensor in the file (the
    later silently replacing the earlier), a model that loads with parameters missing. The schema
    refuses duplicate sibling names; this holds for every container, present and future."""
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise RequestInvalidError(
                f"two tensors would both be named {t.name!r}; give the modules that hold them distinct names",
                ("spec",),
            )
        seen.add(t.name)


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
    nbytes = sum(tensor_nbytes(t) for t in tensors)
    params = sum(math.prod(t.output_shape()) for t in tensors if t.role in ("weight", "bias"))
    return wire.PlanTotals(tensors=len(tensors), parameters=params, bytes=nbytes)


def _check_limits(tensors: list[wire.PlannedTensor], limits: Limits) -> None:
    if len(tensors) > limits.max_tensors:
        raise LimitExceededError(
            f"the spec has {len(tensors):,} tensors; this server allows at most {limits.max_tensors:,} "
            "(INITIUM_MAX_TENSORS)",
            ("spec",),
        )
    total = sum(_generated_elements(t) for t in tensors)
    if total > limits.max_parameters:
        raise LimitExceededError(
            f"the spec has {total:,} elements; this server allows at most {limits.max_parameters:,} "
            "(INITIUM_MAX_PARAMETERS)",
            ("spec",),
        )


def _warnings(uncovered: list[str], unused: list[str], tensors: list[wire.PlannedTensor]) -> list[str]:
    warnings = []
    if uncovered:
        shown = ", ".join(uncovered[:10]) + (" ..." if len(uncovered) > 10 else "")
        warnings.append(f"{count(len(uncovered), 'parameter')} matched no rule: {shown}")
    warnings += [f"{label} matched no tensor" for label in unused]
    warnings += _unknown_follower_warning(tensors)
    return warnings + [_symmetry_warning(t) for t in tensors if _breaks_no_symmetry(t)]


def _unknown_follower_warning(tensors: list[wire.PlannedTensor]) -> list[str]:
    """auto chose by a default where what follows the layer was unknown: say which and how to fix it."""
    guessed = [t.name for t in tensors if t.reason is not None and t.reason.startswith(UNKNOWN_REASON)]
    if not guessed:
        return []
    shown = ", ".join(guessed[:10]) + (" ..." if len(guessed) > 10 else "")
    return [
        f"auto chose {len(guessed)} weights without knowing what follows their layer ({shown}): give each "
        "manifest tensor's followed_by (e.g. 'relu', or 'identity' when no nonlinearity follows), or add a rule"
    ]


# Zero is the standard start for these (Fixup's last branch layers, muP's readout, timm's
# zero_init_last), so a constant there is a choice, not a mistake.
_ZERO_INIT_ROLES = frozenset({"residual_output", "residual_norm", "classifier"})


def _breaks_no_symmetry(t: wire.PlannedTensor) -> bool:
    """A hidden weight matrix whose every entry starts equal: its units compute the same function and
    receive the same gradient, so training can never tell them apart."""
    laws = [p.distribution for p in t.parts] if t.parts else [t.distribution]
    constant = all(law is not None and law.family == "constant" for law in laws)
    return (
        constant and t.role == "weight" and len(t.shape) >= 2 and t.module_type in MATRIX_TYPES
        and not _ZERO_INIT_ROLES & set(t.roles)
    )  # fmt: skip


def _symmetry_warning(t: wire.PlannedTensor) -> str:
    return (
        f"{t.name} starts constant, so its {t.shape[0]} units stay identical under gradient descent; "
        "use a random scheme (or tag the layer with role 'residual_output' or 'classifier' if zero is intended)"
    )
