"""Advice for the probe's findings: a fix is advised only when the probe, rerun with it, shows the
finding cleared or its measure at least halved, and no new kind of finding (issue 15).

Each candidate (model.advice_fixes) is a few rules appended to policy.rules. The tensors it changes
are drawn as a rerun of the request with those rules would draw them (same seed, same names, so
the same Philox streams), the rest are the job's own values, and the probe runs again on the same
batch: what the advice reports is what the user's rerun will report. Re-probing costs a probe
per candidate, so it runs only for networks up to ADVICE_MAX_PARAMETERS, for at most MAX_REPROBES
candidates, stopping once every finding has a fix that clears it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from initium.schemas.plan import Plan
from initium.schemas.report import Propagation
from initium.schemas.request import InitRequest
from initium.schemas.spec import Spec
from initium.service.materialize.tensor import materialize
from initium.service.model.advice_fixes import SOURCES, Fix, Network, apply, changes_something
from initium.service.model.propagation import Loader, propagate
from initium.service.model.propagation_checks import SCALE, Kind, Probed, findings, measure

ADVICE_MAX_PARAMETERS = 20_000_000
MAX_REPROBES = 4
Values = Callable[[str], torch.Tensor]
Reprobe = Callable[[Fix], Probed | None]


def loader(plan: Plan, values: Values) -> Loader:
    """A unit's tensors, by prefix, from `values`; the probe runs in float32 whatever the file's dtype."""
    names = [t.name for t in plan.tensors]

    def load(prefix: str, module: nn.Module) -> None:
        state = {n[len(prefix) + 1 :]: values(n).float() for n in names if n.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True)
        module.float()

    return load


def family(kind: Kind) -> str:
    """Activations and gradients are one family: the worst growth or shrink factor across depth."""
    return "scale" if kind in SCALE else kind


def family_measure(probed: Probed, name: str) -> float:
    if name == "scale":
        return max(measure(probed, "activations"), measure(probed, "gradients"))
    return measure(probed, name)  # type: ignore[arg-type]  # the other families are single kinds


def present(probed: Probed, factor: float) -> set[str]:
    return {family(f.kind) for f in findings(probed, factor)}


@dataclass(frozen=True)
class Verdict:
    """A fix re-probed: the finding families it clears, those it at least halves, and the probe."""

    source: str
    fix: Fix
    after: Probed
    cleared: frozenset[str]
    halved: frozenset[str]

    def helps(self, name: str) -> bool:
        return name in self.cleared or name in self.halved


def judge(source: str, fix: Fix, before: Probed, after: Probed, factor: float) -> Verdict | None:
    """None when the fix adds a finding family that was not there, or clears or halves none."""
    was, now = present(before, factor), present(after, factor)
    if now - was:
        return None
    cleared = frozenset(was - now)
    halved = frozenset(f for f in was & now if family_measure(after, f) <= family_measure(before, f) / 2)
    return Verdict(source, fix, after, cleared, halved) if cleared or halved else None


def declined(request: InitRequest, plan: Plan) -> str | None:
    """Why no fix is re-probed for this request, if so."""
    if plan.totals.parameters > ADVICE_MAX_PARAMETERS:
        return f"re-probing fixes is limited to {ADVICE_MAX_PARAMETERS:,} parameters"
    if request.policy.lsuv is not None:
        return "LSUV rescales the weights after the rules; change policy.lsuv instead"
    if any(r.fan_axes is not None for r in request.policy.rules):
        return "the policy's rules set fan_axes, which re-probing does not reproduce"
    return None


@dataclass
class Reprober:
    """Runs the probe with a fix applied to the job's values."""

    request: InitRequest
    spec: Spec
    plan: Plan
    values: Values
    device: torch.device
    # The job's own values, kept across candidates: the probe loads a unit's tensors forward and
    # again backward, and drawing them is most of its cost (at most ADVICE_MAX_PARAMETERS floats).
    kept: dict[str, torch.Tensor] = field(default_factory=dict)

    def __call__(self, fix: Fix) -> Probed | None:
        """The probe with `fix` applied; None when it does not apply, changes nothing or cannot run."""
        changed = apply(fix, self.plan)
        if not changed or not changes_something(changed, self.plan):
            return None
        seed, device = self.request.seed, self.device
        drawn_once: dict[str, torch.Tensor] = {}  # the fix's tensors (an orthogonal law: a QR each)

        def drawn(name: str) -> torch.Tensor:
            t, cache = changed.get(name), self.kept if name not in changed else drawn_once
            if name not in cache:
                cache[name] = (self.values(name) if t is None else materialize(t, seed, device)).float()
            return cache[name]

        p = propagate(self.spec, loader(self.plan, drawn), self.request.report, seed, device)
        return None if p.skipped is not None else Probed(p.layers, p.loss, p.loss_at_chance)


def verdicts(reprobe: Reprobe, net: Network, before: Probed, factor: float) -> tuple[list[Verdict], set[str]]:
    """Each source's candidates, in registration order, for the present findings it aims at,
    re-probed until one clears all of those (or MAX_REPROBES ran in all): the fixes that help, and
    the families some fix was re-probed for."""
    was = present(before, factor)
    out: list[Verdict] = []
    tried: set[str] = set()
    runs = 0
    for name in SOURCES.names():
        source = SOURCES.get(name)
        aimed = was & {family(k) for k in source.targets}
        for fix in source.fixes(net) if aimed else []:
            if runs >= MAX_REPROBES:
                return out, tried
            after = reprobe(fix)
            if after is None:
                continue
            runs, tried = runs + 1, tried | aimed
            verdict = judge(name, fix, before, after, factor)
            out += [verdict] if verdict is not None else []
            if verdict is not None and aimed <= verdict.cleared:
                break
    return out, tried


def chosen(helping: list[Verdict], before: Probed) -> list[Verdict]:
    """One fix per source, so a user gets one change per cause: the one clearing the most of the
    families the source aims at, then halving the most, then leaving the smallest share of its worst
    halved measure; ties go to the earlier candidate (the sources list the canonical one first)."""

    def rank(v: Verdict) -> tuple[int, int, float]:
        aimed = {family(k) for k in SOURCES.get(v.source).targets}
        left = max((family_measure(v.after, f) / family_measure(before, f) for f in v.halved), default=0.0)
        return -len(v.cleared & aimed), -len(v.halved & aimed), left

    best: dict[str, Verdict] = {}
    for v in helping:
        if v.source not in best or rank(v) < rank(best[v.source]):
            best[v.source] = v
    return list(best.values())


def _rules_json(fix: Fix) -> str:
    rules = []
    for r in fix.rules:
        dumped = r.model_dump(mode="json", exclude_defaults=True)
        init = dumped["init"]
        dumped["init"] = {"scheme": init.pop("scheme"), **init}  # the scheme first, as a person writes it
        rules.append(dumped)
    return json.dumps(rules[0] if len(rules) == 1 else rules)


# Each family's measure, as a message names and formats it.
MEASURE_NAMES = {
    "scale": ("worst depth factor", "{:.3g}"),
    "saturation": ("saturated share", "{:.0%}"),
    "dead": ("dead channel share", "{:.0%}"),
    "loss": ("loss gap to log(C)", "{:.3g}"),
}


def _outcome(v: Verdict, name: str, before: Probed) -> str:
    what, number = MEASURE_NAMES[name]
    was, now = family_measure(before, name), family_measure(v.after, name)
    verb = "clears it" if name in v.cleared else "at least halves it"
    return f"{verb} ({what} {number.format(now)}, was {number.format(was)})"


def advice_texts(fixes: list[Verdict], tried: set[str], before: Probed, factor: float) -> list[str]:
    """Each finding's text with its verified fix (the first source's chosen fix that helps it), or
    with why none is advised; each line names its fix in full, so it reads alone."""
    out: list[str] = []
    for f in findings(before, factor):
        name = family(f.kind)
        best = next((v for v in fixes if v.helps(name)), None)
        if best is None:
            none = "; no fix advised: no change tried cleared it or halved it"
            out.append(f.text + (none if name in tried else ""))
            continue
        rules, outcome = _rules_json(best.fix), _outcome(best, name, before)
        out.append(f"{f.text}; fix: append to policy.rules {rules} ({best.fix.why}); re-probed, this {outcome}")
    return out


def advise(
    request: InitRequest, plan: Plan, values: Values, device: torch.device, propagation: Propagation
) -> Propagation:
    """`propagation` with each finding followed by a verified fix, or by why none is advised."""
    factor = request.report.warn_factor
    before = Probed(propagation.layers, propagation.loss, propagation.loss_at_chance)
    if propagation.skipped is not None or not isinstance(request.spec, Spec) or not findings(before, factor):
        return propagation
    why_not = declined(request, plan)
    if why_not is not None:
        texts = [f"{f.text}; no fix advised: {why_not}" for f in findings(before, factor)]
        return propagation.model_copy(update={"warnings": texts})
    reprobe = Reprober(request, request.spec, plan, values, device)
    helping, tried = verdicts(reprobe, Network(request.spec, plan), before, factor)
    texts = advice_texts(chosen(helping, before), tried, before, factor)
    return propagation.model_copy(update={"warnings": texts})
