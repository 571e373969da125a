"""Policy rules: the effective rule list (preset first, then the request's) and last-match-wins lookup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from initium.schemas._module import WEIGHTED_SUM_TYPES
from initium.schemas.policy import Policy, Rule
from initium.schemas.presets import Preset, UnknownPresetError, builtin_presets, resolve_ref
from initium.service.errors import RequestInvalidError


@dataclass(frozen=True)
class LabeledRule:
    """A rule with the label plans and reports show for it, e.g. 'policy.rules[2]'."""

    label: str
    rule: Rule
    loc: tuple[str | int, ...]


def effective_rules(
    policy: Policy, presets: Mapping[tuple[str, int], Preset] | None = None
) -> tuple[str | None, list[LabeledRule]]:
    """The pinned preset reference and the rules in the order they apply; `presets` adds published
    presets to the built-in ones."""
    rules: list[LabeledRule] = []
    pinned = None
    if policy.preset is not None:
        try:
            preset = resolve_ref(policy.preset, presets or builtin_presets())
        except UnknownPresetError as exc:
            raise RequestInvalidError(f"{exc} (see GET /v1/presets)", ("policy", "preset")) from None
        pinned = f"{preset.name}@{preset.version}"
        rules += [
            LabeledRule(f"preset:{pinned}[{i}]", rule, ("policy", "preset")) for i, rule in enumerate(preset.rules)
        ]
    rules += [LabeledRule(f"policy.rules[{i}]", rule, ("policy", "rules", i)) for i, rule in enumerate(policy.rules)]
    if policy.lsuv is not None and policy.lsuv.start == "orthogonal":
        # LSUV's first step (Mishkin and Matas 2016): orthonormal weights for every layer it rescales.
        rules += [_lsuv_start(t) for t in WEIGHTED_SUM_TYPES]
    return pinned, rules


def _lsuv_start(module_type: str) -> LabeledRule:
    rule = Rule.model_validate({"match": {"type": module_type, "role": "weight"}, "init": {"scheme": "orthogonal"}})
    return LabeledRule("lsuv:orthonormal start", rule, ("policy", "lsuv"))


def matches(rule: Rule, name: str, module_type: str, roles: tuple[str, ...]) -> bool:
    m = rule.match
    return (
        (m.type is None or m.type == module_type)
        and m.matches_roles(roles)
        and (m.name is None or fnmatchcase(name, m.name))
    )


def last_match(rules: list[LabeledRule], name: str, module_type: str, roles: tuple[str, ...]) -> LabeledRule | None:
    for labeled in reversed(rules):
        if matches(labeled.rule, name, module_type, roles):
            return labeled
    return None
