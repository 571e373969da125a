"""Candidate fixes for the probe's findings: policy rules a user appends, and the laws they give.

A fix is a list of rules appended last to policy.rules (the last matching rule wins, so it
overrides a preset's or the request's own rules for the tensors it matches). model.advice draws
the tensors a fix changes, re-probes, and advises it only when the probe then shows the finding
cleared or its measure at least halved (issue 15).

[Note: laws without the planner] A worker never loads the planner (tests/service/test_import_rules.py),
so the few schemes a fix may use resolve here, from the fans and shape the stored plan records
for each tensor; tests/service/model/test_advice.py holds every law equal to the planner's for
the same rule, and reruns each advised request through the planner.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from initium.schemas import schemes as wire
from initium.schemas._module import MATRIX_TYPES, WEIGHTED_SUM_TYPES
from initium.schemas.plan import Distribution, Plan, PlannedTensor
from initium.schemas.policy import Rule
from initium.schemas.spec import Linear, Spec
from initium.service.model.propagation_checks import SCALE, Kind
from initium.service.plan import distributions as d
from initium.service.plan.gain import calculate_gain
from initium.service.registry import Registry


@dataclass(frozen=True)
class Fix:
    """Rules to append to policy.rules, and why they should help (the scheme and its source)."""

    rules: tuple[Rule, ...]
    why: str


@dataclass(frozen=True)
class Network:
    """What fix sources read: the spec and its stored plan."""

    spec: Spec
    plan: Plan


def rule(init: dict[str, Any], **match: str) -> Rule:
    return Rule.model_validate({"match": match, "init": init})


# -- Laws: the schemes a fix may use, resolved as the planner does (plan.schemes) ----------------

Law = Callable[[Any, PlannedTensor], d.Distribution]
LAWS: Registry[Law] = Registry("advice law")


@LAWS.register("kaiming_normal")
def _kaiming_normal(p: wire.KaimingNormal, t: PlannedTensor) -> d.Distribution:
    fan = t.fan_in if p.mode == "fan_in" else t.fan_out
    return d.Normal(0.0, calculate_gain(p.nonlinearity, p.negative_slope) / math.sqrt(fan))


@LAWS.register("xavier_normal")
def _xavier_normal(p: wire.XavierNormal, t: PlannedTensor) -> d.Distribution:
    return d.Normal(0.0, p.gain * math.sqrt(2.0 / (t.fan_in + t.fan_out)))


@LAWS.register("orthogonal")
def _orthogonal(p: wire.Orthogonal, t: PlannedTensor) -> d.Distribution:
    return d.Orthogonal(p.gain, t.shape[0], math.prod(t.shape[1:]))


@LAWS.register("zeros")
def _zeros(p: wire.Zeros, t: PlannedTensor) -> d.Distribution:
    return d.Constant(0.0)


@LAWS.register("relu_bias")
def _relu_bias(p: wire.ReluBias, t: PlannedTensor) -> d.Distribution:
    return d.Constant(p.value if (t.followed_by or "").startswith(("relu", "leaky_relu")) else 0.0)


def _matches(r: Rule, t: PlannedTensor) -> bool:
    """plan.rules.matches on a planned tensor: every given field of the match holds."""
    m = r.match
    return (
        (m.type is None or m.type == t.module_type)
        and m.matches_roles(t.roles)
        and (m.name is None or fnmatchcase(t.name, m.name))
    )


def apply(fix: Fix, plan: Plan) -> dict[str, PlannedTensor] | None:
    """The tensors `fix` changes, as the plan with its rules appended would hold them (the fans the
    plan recorded; model.advice declines requests whose rules set fan_axes); None when a tensor it
    matches is packed (its parts resolve block by block) or covered by no rule today."""
    changed: dict[str, PlannedTensor] = {}
    for t in plan.tensors:
        fired = next((r for r in reversed(fix.rules) if _matches(r, t)), None)
        if fired is None or t.role not in ("weight", "bias"):
            continue
        if t.parts is not None or t.rule is None:
            return None
        law = LAWS.get(fired.init.scheme)(fired.init, t)
        changed[t.name] = t.model_copy(
            update={
                "rule": "advice", "init": fired.init, "reason": None, "expected_mean": law.mean,
                "expected_std": law.std, "elementwise": law.elementwise,
                "distribution": Distribution(family=law.family, params=d.distribution_params(law)),
            }
        )  # fmt: skip
    return changed


def changes_something(changed: dict[str, PlannedTensor], plan: Plan) -> bool:
    """Whether any tensor's law differs from what the plan already draws it from."""
    before = {t.name: t for t in plan.tensors}
    return any(_law_key(t) != _law_key(before[name]) for name, t in changed.items())


def _law_key(t: PlannedTensor) -> tuple[str, tuple[tuple[str, float], ...]] | None:
    if t.distribution is None:
        return None
    # 12 significant digits: the same law reached by a different formula order is the same law.
    return t.distribution.family, tuple(sorted((k, float(f"{v:.12g}")) for k, v in t.distribution.params.items()))


# -- Fix sources: one per finding family, registered with the kinds they act on -----------------

FixSource = Callable[[Network], list[Fix]]


@dataclass(frozen=True)
class Source:
    targets: frozenset[Kind]
    fixes: FixSource


SOURCES: Registry[Source] = Registry("fix source")


def register_source(name: str, targets: frozenset[Kind]) -> Callable[[FixSource], FixSource]:
    def add(fn: FixSource) -> FixSource:
        SOURCES.register(name)(Source(targets, fn))
        return fn

    return add


def _weights(plan: Plan) -> list[PlannedTensor]:
    return [t for t in plan.tensors if t.role == "weight" and t.module_type in WEIGHTED_SUM_TYPES and t.parts is None]


def _per_type(plan: Plan, init: dict[str, Any], role: str = "weight") -> tuple[Rule, ...]:
    types = dict.fromkeys(t.module_type for t in _weights(plan))
    return tuple(rule(init, type=kind, role=role) for kind in types)


def _nonlinearity(plan: Plan) -> str | None:
    """The activation most weight layers feed (None: a linear network), as the plan records it."""
    followers = Counter((t.followed_by or "").split("(")[0] for t in _weights(plan) if t.followed_by)
    return followers.most_common(1)[0][0] if followers else None


# Per nonlinearity, the weight laws to try, in order, with their source. Orthogonal laws are tried
# only for linear networks, where they are the exact fix (Saxe et al. 2013): on 50-layer tanh and
# ReLU chains they did no better than the Gaussian law of the same gain (worst depth factor 40
# against 14 for tanh at gain 1, 5.6 against 5.8 for ReLU), at a QR per matrix.
Tries = list[tuple[dict[str, Any], str]]
_RELU: Tries = [
    ({"scheme": "kaiming_normal", "nonlinearity": "relu"}, "variance 2 / fan_in through a ReLU, He et al. 2015"),
]
_VARIANCE: dict[str | None, Tries] = {
    "relu": _RELU, "gelu": _RELU, "silu": _RELU, "elu": _RELU,
    "tanh": [
        ({"scheme": "xavier_normal", "gain": 5 / 3}, "Glorot and Bengio 2010 with torch's tanh gain 5/3"),
        ({"scheme": "xavier_normal"}, "gain 1, the edge of chaos for tanh without bias, Schoenholz et al. 2017"),
    ],
    "sigmoid": [
        ({"scheme": "xavier_normal"}, "Glorot and Bengio 2010 with torch's sigmoid gain 1"),
        ({"scheme": "xavier_normal", "gain": 4.0}, "gain 4 = 1 / sigmoid'(0): the backward variance kept near 0"),
    ],
    "selu": [
        ({"scheme": "kaiming_normal", "nonlinearity": "linear"}, "variance 1 / fan_in for SELU, Klambauer et al. 2017"),
    ],
    None: [
        ({"scheme": "kaiming_normal", "nonlinearity": "linear"}, "variance 1 / fan_in for a linear network"),
        ({"scheme": "orthogonal"}, "orthogonal with gain 1, an exact isometry for a linear network, Saxe et al. 2013"),
    ],
}  # fmt: skip


@register_source("variance", SCALE | {"saturation"})
def _variance(net: Network) -> list[Fix]:
    """The weight scale for the nonlinearity the network uses most, one rule per layer type."""
    kind = _nonlinearity(net.plan)
    if kind == "leaky_relu":
        slope = _slope(net.plan)
        init = {"scheme": "kaiming_normal", "nonlinearity": "leaky_relu", "negative_slope": slope}
        return [Fix(_per_type(net.plan, init), f"He et al. 2015 for a leaky ReLU of slope {slope:g}")]
    return [Fix(_per_type(net.plan, init), why) for init, why in _VARIANCE.get(kind, [])]


def _slope(plan: Plan) -> float:
    followers = " ".join(t.followed_by or "" for t in _weights(plan))
    found = re.search(r"negative_slope=([0-9.eE+-]+)", followers)
    return float(found.group(1)) if found else 0.01


@register_source("residual", SCALE)
def _residual(net: Network) -> list[Fix]:
    """Each residual branch's last weight layer at 0, so every block starts as the identity: the step
    Fixup (Zhang et al. 2019) and SkipInit (De and Smith 2020) share, and torchvision's
    zero_init_residual takes with each branch's last norm."""
    branches: dict[str, str] = {}
    for t in net.plan.tensors:
        if t.residual is not None and t.role == "weight" and t.module_type in MATRIX_TYPES and len(t.shape) >= 2:
            branches[t.residual] = t.name  # the last one in forward order stays
    rules = _name_rules(set(branches.values()), net.plan, {"scheme": "zeros"})
    why = "each residual branch's last layer at 0, so every block starts as the identity, Fixup, Zhang et al. 2019"
    return [Fix(rules, why)] if rules else []


@register_source("bias", frozenset({"dead"}))
def _bias(net: Network) -> list[Fix]:
    """Biases at 0, then ReLU biases at 0.1 (Goodfellow et al. 2016, 6.3.1), for units that never fire."""
    return [
        Fix(_per_type(net.plan, {"scheme": "zeros"}, "bias"), "biases at 0"),
        Fix(_per_type(net.plan, {"scheme": "relu_bias"}, "bias"), "ReLU biases at 0.1, Goodfellow et al. 2016"),
    ]


@register_source("head", frozenset({"loss"}))
def _head(net: Network) -> list[Fix]:
    """The classifier's weight: Glorot's variance (a softmax reads it), then a tenth of it, near muP's
    zero readout (Yang et al. 2022) but not constant: a zero head stops every gradient at init and
    the plan warns that its units start identical (a fix must not trade one warning for another)."""
    last = net.spec.modules[-1]
    if not isinstance(last, Linear):
        return []
    name = f"{last.name if last.name is not None else len(net.spec.modules) - 1}.weight"
    return [
        Fix((rule({"scheme": "xavier_normal"}, name=name),), "Glorot and Bengio 2010 for the head"),
        Fix((rule({"scheme": "xavier_normal", "gain": 0.1}, name=name),), "a small head, near muP's zero readout"),
    ]


def _name_rules(names: set[str], plan: Plan, init: dict[str, Any]) -> tuple[Rule, ...]:
    """Rules matching exactly `names` among the plan's tensors: one glob per naming pattern (index
    segments that vary become *), or one rule per name where a glob would match more."""
    groups: dict[str, list[list[str]]] = {}
    for name in sorted(names):
        parts = name.split(".")
        groups.setdefault(".".join("#" if p.isdigit() else p for p in parts), []).append(parts)
    everything = [t.name for t in plan.tensors]
    rules: list[Rule] = []
    for members in groups.values():
        glob = ".".join(col[0] if len(set(col)) == 1 else "*" for col in zip(*members, strict=True))
        wanted = {".".join(parts) for parts in members}
        if {n for n in everything if fnmatchcase(n, glob)} == wanted:
            rules.append(rule(init, name=glob))
        else:
            rules += [rule(init, name=n) for n in sorted(wanted)]
    return tuple(rules)
