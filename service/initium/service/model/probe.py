"""The report's network-level part: when to run the probe, feeding it the job's tensors, and the
warnings a reader should see first."""

from __future__ import annotations

from collections.abc import Callable

import torch

from initium.schemas.plan import Plan
from initium.schemas.report import Propagation, TensorStats
from initium.schemas.request import InitRequest
from initium.schemas.spec import Spec
from initium.service.model.advice import advise, loader
from initium.service.model.propagation import propagate

AUTO_MAX_PARAMETERS = 200_000_000


def run_probe(
    request: InitRequest, plan: Plan, values: Callable[[str], torch.Tensor], device: torch.device
) -> Propagation | None:
    """`values`: a tensor's name -> its values, exactly the bytes written (the pipeline draws
    elementwise laws again and reads the others back: [Note: what the probe reads] in pipeline.job)."""
    options = request.report
    if options.propagation == "off" or (not isinstance(request.spec, Spec) and options.propagation == "auto"):
        return None
    if not isinstance(request.spec, Spec):  # asked for by name: say why not rather than nothing
        return Propagation(probe_shape=[], skipped="a manifest lists tensors, not the forward pass; send a tree spec")
    if request.slices:
        return Propagation(probe_shape=[], skipped="the file holds slices, not the whole network")
    if options.propagation == "auto" and plan.totals.parameters > AUTO_MAX_PARAMETERS:
        return Propagation(
            probe_shape=[], skipped=f"{plan.totals.parameters:,} parameters; set report.propagation to 'on' to probe"
        )
    propagation = propagate(request.spec, loader(plan, values), options, request.seed, device)
    try:
        return advise(request, plan, values, device, propagation)  # each finding with a fix verified by re-probing
    except Exception as exc:  # advice re-probes the network: like the probe, it never fails the job (DESIGN 6)
        note = f"no fix advised: re-probing failed with {type(exc).__name__}: {exc}"
        return propagation.model_copy(update={"warnings": [*propagation.warnings, note]})


def collect_warnings(
    plan: Plan, stats: list[TensorStats], propagation: Propagation | None, lsuv_skipped: str | None = None
) -> list[str]:
    """The report's summary: the plan's warnings, each tensor's flags, the probe's findings, and
    every check that did not run with the reason, so a skip never reads as a clean result."""
    out = list(plan.warnings)
    if lsuv_skipped is not None:
        out.append(f"LSUV skipped: {lsuv_skipped}; the weights are the rules' draws, not rescaled")
    out += [f"{t.name}: {flag}" for t in stats for flag in t.flags]
    if propagation is not None and propagation.skipped is not None:
        out.append(f"signal propagation skipped: {propagation.skipped}")
    if propagation is not None:
        out += propagation.warnings
    return out
