"""Summarize: each generated tensor's statistics against its own law, and the job's report."""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypedDict, TypeVar

import safetensors
import torch

import initium.service
from initium.schemas import report as wire
from initium.schemas.plan import Plan, PlannedTensor
from initium.schemas.request import InitRequest
from initium.service.plan.distributions import Distribution, planned_distribution
from initium.service.plan.output import tensor_nbytes
from initium.service.summarize.checks import fit, flags, rescaled
from initium.service.summarize.histogram import histogram, keep_largest
from initium.service.summarize.spectral import spectral, spectrum_missing
from initium.service.summarize.stats import Measured, measure

log = logging.getLogger("initium.worker")
_T = TypeVar("_T")


def _scheme_label(planned: PlannedTensor) -> str:
    if planned.init is not None:
        return planned.init.scheme
    if planned.parts:
        return "mixed: " + ", ".join(sorted({p.init.scheme for p in planned.parts if p.init is not None}))
    return f"buffer:{planned.role}"


def tensor_stats(
    planned: PlannedTensor, values: torch.Tensor, rescale: float = 1.0, tests: int = 1
) -> wire.TensorStats:
    """One tensor's statistics next to its law's. `rescale`: LSUV's factor on the drawn values (> 0),
    which the expected moments and every check include; `tests`: how many tensors the job checks,
    which share the flags' false-alarm level (summarize.checks, [Note: calibrated flags])."""
    m = measure(values)
    dist = None if planned.distribution is None else rescaled(planned_distribution(planned), rescale)
    checks = _checks(planned, values, m, dist, tests)
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
        expected_mean=None if planned.expected_mean is None else planned.expected_mean * rescale,
        expected_std=None if planned.expected_std is None else planned.expected_std * rescale,
        rescale=None if rescale == 1.0 else rescale,
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
    frobenius_norm: float | None
    power_sums: wire.PowerSums
    fit: wire.FitCheck | None
    spectral: wire.SpectralStats | None
    histogram: wire.Histogram | None
    flags: list[str]


def _or_missing(name: str, compute: Callable[[], _T], missing: Callable[[str], _T]) -> _T:
    """A statistic that raises is reported missing, with its reason, and the job goes on: the report
    is about the weights and never stands in their way (DESIGN.md section 1, issue 15)."""
    try:
        return compute()
    except Exception as error:  # whatever it is: a statistic never fails a job
        log.warning("%s: not computed", name, exc_info=True)
        return missing(f"{type(error).__name__}: {error}")


def _no_flags(reason: str) -> list[str]:
    return []  # a check that cannot run flags nothing; _or_missing logs why


def _checks(
    planned: PlannedTensor, values: torch.Tensor, m: Measured, dist: Distribution | None, tests: int = 1
) -> _Checks:
    """The report's deeper checks; packed tensors with several laws and buffers get moments only. A
    check that raises is missing (the spectrum says why; the fit's reason goes to the log)."""
    # None where the float64 sum of squares overflowed (values near float64's limit): not measurable.
    # (or underflowed to 0 for nonzero values below 1e-162).
    squares_held = math.isfinite(m.sum_of_squares) and (m.sum_of_squares > 0 or not m.abs_max)
    frobenius = math.sqrt(m.sum_of_squares) if squares_held else None
    checks = _Checks(frobenius_norm=frobenius, power_sums=m.power_sums)
    if planned.role in ("weight", "bias"):
        checks["fit"] = _or_missing(f"{planned.name}: fit", lambda: fit(values, dist, planned.dtype), lambda _: None)
        if planned.role == "weight":
            checks["spectral"] = _or_missing(
                f"{planned.name}: spectrum", lambda: spectral(values, dist, m.sum_of_squares), spectrum_missing
            )
        checks["histogram"] = histogram(planned, values, dist)  # the report keeps the largest few
        checks["flags"] = _or_missing(f"{planned.name}: flags", lambda: flags(m, dist, planned.dtype, tests), _no_flags)
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
    return wire.Report(tensors=keep_largest(stats), totals=totals, artifact=artifact, provenance=provenance)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"
