"""FastAPI dependencies: the app's store, presets, limits, metrics, supervisor and planning slots, as
Annotated aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from initium.service.api.capacity import PlanSlots
from initium.service.api.metrics import Metrics
from initium.service.config import Settings
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.queue import Dispatcher
from initium.service.jobs.store import JobStore
from initium.service.jobs.submit import VerifiedFiles
from initium.service.jobs.supervisor import WorkerSupervisor
from initium.service.plan.limits import Limits


def _state(name: str) -> Callable[[Request], Any]:
    """A dependency that returns what create_app put on app.state under `name`."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"app_state_{name}"
    return get


def _limits(settings: Annotated[Settings, Depends(_state("settings"))]) -> Limits:
    return settings.limits()


StoreDep = Annotated[JobStore, Depends(_state("store"))]
VerifiedDep = Annotated[VerifiedFiles, Depends(_state("verified"))]
PresetsDep = Annotated[PresetStore, Depends(_state("presets"))]
LimitsDep = Annotated[Limits, Depends(_limits)]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
SupervisorDep = Annotated[WorkerSupervisor | None, Depends(_state("supervisor"))]
DispatcherDep = Annotated[Dispatcher, Depends(_state("dispatcher"))]
PlanSlotsDep = Annotated[PlanSlots, Depends(_state("plan_slots"))]
