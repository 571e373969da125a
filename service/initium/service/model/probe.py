"""The report's network-level part: when to run the probe, feeding it the job's tensors, and the
warnings a reader should see first."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from initium.schemas.plan import Plan
from initium.schemas.report import Propagation, TensorStats
from initium.schemas.request import InitRequest
from initium.schemas.spec import Spec
from initium.service.model.propagation import propagate

AUTO_MAX_PARAMETERS = 200_000_000


def run_probe(
    request: InitRequest, plan: Plan, values: Callable[[str], torch.Tensor], device: torch.device
) -> Propagation | None:
    """`values`: a tensor's name -> its values, exactly the bytes written (the pipeline draws
    elementwise laws again and reads the others back: [Note: what the probe reads] in pipeline.job)."""
    options = request.report
    if not isinstance(request.spec, Spec) or options.propagation == "off":
        return None
    if request.slices:
        return Propagation(probe_shape=[], skipped="the file holds slices, not the whole network")
    if options.propagation == "auto" and plan.totals.parameters > AUTO_MAX_PARAMETERS:
        return Propagation(
            probe_shape=[], skipped=f"{plan.totals.parameters:,} parameters; set report.propagation to 'on' to probe"
        )
    names = [t.name for t in plan.tensors]

    def load(prefix: str, module: nn.Module) -> None:
        # A unit's tensors, by prefix; the probe runs in float32 whatever the file's dtype.
        state = {n[len(prefix) + 1 :]: values(n).float() for n in names if n.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True)
        module.float()

    return propagate(request.spec, load, options, request.seed, device)


def collect_warnings(plan: Plan, stats: list[TensorStats], propagation: Propagation | None) -> list[str]:
    out = list(plan.warnings)
    out += [f"{t.name}: {flag}" for t in stats for flag in t.flags]
    if propagation is not None:
        out += propagation.warnings
    return out
