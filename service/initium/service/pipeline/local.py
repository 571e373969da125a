"""Local mode's one entry point: the service's plan, job run and reads, in this process, with no server.

The client's `Client.local()` calls only this (it imports no fastapi, uvicorn or celery): a request
is planned, stored and run to the end here against a job store in a local directory, by the same
code a worker runs, so it gives the bytes the service gives, and a repeated request is answered from
that store. Errors are the service's own (initium.service.errors); `error_answer` turns one into the
HTTP status and body the API would have answered with, which the client raises as its typed error.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from initium.schemas.catalog import SchemeInfo, scheme_catalog
from initium.schemas.errors import ErrorBody, ErrorInfo
from initium.schemas.job import JobStatus
from initium.schemas.plan import Plan, PlannedTensor
from initium.schemas.presets import Preset
from initium.schemas.report import Report
from initium.schemas.request import InitRequest
from initium.service.config import Settings
from initium.service.errors import InitiumError
from initium.service.jobs import submit as jobs
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.store import JobStore
from initium.service.materialize.tensor import materialize, pick_device
from initium.service.model.lsuv import lsuv_scales
from initium.service.pipeline.job import execute_job, publish_report
from initium.service.pipeline.loop import run_one
from initium.service.plan.planner import make_plan
from initium.service.write.directory import LocalArtifacts

ServiceError = InitiumError  # what every deliberate failure below derives from


def error_answer(error: InitiumError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON error body) the API answers `error` with: {"error": {type, message, loc}}."""
    body = ErrorBody(error=ErrorInfo(type=error.type, message=error.message, loc=list(error.loc)))
    return error.status, body.model_dump(mode="json")


class LocalService:
    """The service over a job store in `data_dir`, generating on `device` (auto: cuda when visible,
    cpu, or cuda[:N]). Limits come from INITIUM_* settings as the API's do. Raises ServiceError's
    subclasses: RequestInvalidError (422) for a request that cannot be planned, JobNotFoundError
    (404) for an unknown id, JobNotReadyError / JobFailedError (409) for results asked of an
    unfinished or failed job, ArtifactCorruptError (500) for a file that no longer matches its sha256."""

    def __init__(self, data_dir: Path, device: str = "auto") -> None:
        self.data_dir = data_dir
        self.device: torch.device = pick_device(device)
        # Local mode keeps its artifacts as files in data_dir (the local artifact store), whatever
        # INITIUM_ARTIFACT_STORE says: `file` hands out their paths.
        self._artifacts = LocalArtifacts(data_dir)
        self._store = JobStore(data_dir, artifacts=self._artifacts)
        settings = Settings(data_dir=data_dir)  # the API's limits, from the same INITIUM_* variables
        self._presets = PresetStore(data_dir, settings.max_preset_rules, settings.max_presets_bytes)
        self._limits = settings.limits()
        self._verified = jobs.VerifiedFiles()

    def plan(self, request: InitRequest) -> Plan:
        """The dry run: every tensor the request would produce (uncovered parameters are warnings)."""
        return make_plan(request, self._limits, self._presets.all())

    def run(self, request: InitRequest) -> JobStatus:
        """Submit the request and run its job to the end here; an identical request already
        succeeded is answered from the store. Another process sharing `data_dir` may be running the
        same job: then the status returned is still queued or running (poll `status`)."""
        submission = jobs.submit(self._store, request, self._limits, self._presets)
        job_id = submission.status.id
        if submission.status.state != "succeeded":
            # The weights only: the report is computed when first asked for (`report`), never on
            # the way to the weights (see [Note: weights first] in initium.service.pipeline.job).
            run_one(self._store, job_id, self.device, functools.partial(execute_job, with_report=False))
        self._store.dequeue(job_id)  # queued by submit (a failed report's retry included): done here
        return self.status(job_id)

    def tensors(self, request: InitRequest) -> dict[str, torch.Tensor]:
        """Every tensor of `request` (state_dict name -> values on this service's device), exactly
        the values its file would hold, writing nothing: what in-place init fills a module with
        (issue 17). The same plan check, LSUV factors and materialize a job runs; errors as `run`'s."""
        plan, scales = self.plan_and_scales(request)
        return {t.name: materialize(t, request.seed, self.device, scales.get(t.name, 1.0)) for t in plan.tensors}

    def plan_and_scales(self, request: InitRequest) -> tuple[Plan, dict[str, float]]:
        """What `tensors` draws from, drawing nothing: the checked plan and LSUV's factor by weight
        name (empty without policy.lsuv). Sharded in-place init materializes each rank's boxes of
        it (initium.client._sharded); errors as `run`'s."""
        plan = jobs.plan_request(request, self._limits, self._presets)
        return plan, lsuv_scales(request, plan, self.device)[0]

    @staticmethod
    def draw(tensor: PlannedTensor, seed: int, device: torch.device, scale: float = 1.0) -> torch.Tensor:
        """One planned tensor's values on `device` (only its `slice` when it has one), times LSUV's
        `scale`: what a job's materialize writes for it. Raises ValueError for an uncovered tensor."""
        return materialize(tensor, seed, device, scale)

    def status(self, job_id: str) -> JobStatus:
        return jobs.to_status(self._store.records.load(job_id))

    def report(self, job_id: str) -> Report:
        """The job's report, computed here first when it is pending (local mode computes it on the
        first request for it, not on the way to the weights)."""
        record = self._store.records.load(job_id)
        if record.state == "succeeded" and record.report_state == "pending":
            publish_report(self._store, job_id, None, self.device)
        return jobs.load_report(self._store, job_id)

    def file(self, job_id: str, name: str | None = None) -> tuple[Path, str]:
        """(path, sha256) of one of a succeeded job's files, checked against its recorded sha256
        first (once per file version); name=None for the single weights file of unsharded output."""
        if name is None:
            stored = jobs.weights_file(self._store, job_id, self._verified)
        else:
            stored = jobs.job_file(self._store, job_id, name, self._verified)
        return self._artifacts.path(job_id, stored.name), stored.sha256

    def schemes(self) -> list[SchemeInfo]:
        return scheme_catalog().schemes

    def presets(self) -> list[Preset]:
        """Every preset, built-in and published in `data_dir`, by name then version."""
        return sorted(self._presets.all().values(), key=lambda p: (p.name, p.version))

    def preset(self, ref: str) -> Preset:
        """'name' (newest version) or 'name@version'; PresetNotFoundError (the API's 404) when none is."""
        return self._presets.lookup(ref)

    def publish_preset(self, preset: Preset) -> Preset:
        """Publish in `data_dir`; identical republishing is a no-op, other rules under a published
        version raise ConflictError (versions are immutable)."""
        return self._presets.publish(preset)[0]
