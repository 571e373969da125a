"""FastAPI dependencies: the app's store, settings, limits and supervisor, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from initium.service.config import Settings
from initium.service.jobs import VerifiedFiles
from initium.service.metrics import Metrics
from initium.service.plan import Limits
from initium.service.presets import PresetStore
from initium.service.store import JobStore
from initium.service.supervisor import WorkerSupervisor


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _limits(settings: Annotated[Settings, Depends(_settings)]) -> Limits:
    return Limits(
        max_parameters=settings.max_parameters,
        max_tensors=settings.max_tensors,
        max_depth=settings.max_depth,
        max_modules=settings.max_modules,
    )


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _supervisor(request: Request) -> WorkerSupervisor | None:
    supervisor: WorkerSupervisor | None = request.app.state.supervisor
    return supervisor


def _presets(request: Request) -> PresetStore:
    presets: PresetStore = request.app.state.presets
    return presets


def _verified(request: Request) -> VerifiedFiles:
    verified: VerifiedFiles = request.app.state.verified
    return verified


StoreDep = Annotated[JobStore, Depends(_store)]
VerifiedDep = Annotated[VerifiedFiles, Depends(_verified)]
PresetsDep = Annotated[PresetStore, Depends(_presets)]
SettingsDep = Annotated[Settings, Depends(_settings)]
LimitsDep = Annotated[Limits, Depends(_limits)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
SupervisorDep = Annotated[WorkerSupervisor | None, Depends(_supervisor)]
