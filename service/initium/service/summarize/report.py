"""Summarize: each generated tensor's statistics against its own law, and the job's report."""

from __future__ import annotations

import math
import platform
from datetime import UTC, datetime
from typing import TypedDict

import safetensors
import torch

import initium.service
from initium.schemas import report as wire
from initium.schemas.plan import Plan, PlannedTensor
from initium.schemas.request import InitRequest
from initium.service.plan.distributions import Distribution, planned_distribution
from initium.service.plan.output import tensor_nbytes
from initium.service.summarize.checks import fit, flags
from initium.service.summarize.spectral import spectral
from initium.service.summarize.stats import Measured, measure


def _scheme_label(planned: PlannedTensor) -> str:
    if planned.init is not None:
        return planned.init.scheme
    if planned.parts:
        return "mixed: " + ", ".join(sorted({p.init.scheme for p in planned.parts if p.init is not None}))
    return f"buffer:{planned.role}"


def tensor_stats(planned: PlannedTensor, values: torch.Tensor) -> wire.TensorStats:
    m = measure(values)
    dist = None if planned.distribution is None else planned_distribution(planned)
    checks = _checks(planned, values, m, dist)
    return wire.TensorStats(
        **checks,
        name=planned.name,
        shape=planned.shape,
        slice=planned.slice,
        dtype=planned.dtype,
        role=planned.role,
        scheme=_scheme_label(planned),
        params=planned.init,
        rule=planned.rule,
        fan_in=planned.fan_in,
        fan_out=planned.fan_out,
        expected_mean=planned.expected_mean,
        expected_std=planned.expected_std,
        mean=m.mean,
        std=m.std,
        min=m.min,
        max=m.max,
        abs_max=m.abs_max,
        zero_fraction=m.zero_fraction,
        nan_count=m.nan_count,
        inf_count=m.inf_count,
    )


class _Checks(TypedDict, total=False):
    frobenius_norm: float
    power_sums: wire.PowerSums
    fit: wire.FitCheck | None
    spectral: wire.SpectralStats | None
    flags: list[str]


def _checks(planned: PlannedTensor, values: torch.Tensor, m: Measured, dist: Distribution | None) -> _Checks:
    """The report's deeper checks; packed tensors with several laws and buffers get moments only."""
    power = wire.PowerSums(n=m.n_finite, s1=m.power_sums[0], s2=m.power_sums[1], s3=m.power_sums[2], s4=m.power_sums[3])
    checks = _Checks(frobenius_norm=math.sqrt(m.power_sums[1]), power_sums=power)
    if planned.role in ("weight", "bias"):
        checks["fit"] = fit(values, dist, planned.dtype)
        checks["spectral"] = spectral(values, dist, m.power_sums[1]) if planned.role == "weight" else None
        checks["flags"] = flags(m.n_finite, m.mean, m.std, m.central_m4, dist, planned.dtype)
    return checks


def build_report(
    plan: Plan,
    request: InitRequest,
    stats: list[wire.TensorStats],
    artifact: wire.ArtifactInfo,
    device: torch.device,
    timings: wire.StageTimings,
) -> wire.Report:
    totals = wire.ReportTotals(
        tensors=len(stats),
        parameters=plan.totals.parameters,
        bytes=sum(tensor_nbytes(t) for t in plan.tensors),
        nan_count=sum(s.nan_count for s in stats),
        inf_count=sum(s.inf_count for s in stats),
    )
    provenance = wire.Provenance(
        request_id=plan.request_id,
        seed=request.seed,
        dtype=request.dtype,
        algorithm=plan.algorithm,
        device=_device_name(device),
        versions={
            "initium": initium.service.__version__,
            "torch": torch.__version__,
            "safetensors": safetensors.__version__,
            "python": platform.python_version(),
        },
        timings=timings,
        created_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    return wire.Report(tensors=stats, totals=totals, artifact=artifact, provenance=provenance)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"
