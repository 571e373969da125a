"""Weights first, the report after (issue 17, item 1): a job succeeds with its weights, its report
has a state of its own, and nothing about the report can take the weights down with it."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from initium.schemas import InitRequest
from initium.schemas.job import FileInfo, JobRecord, Progress
from initium.schemas.report import Report
from initium.service.api.app import create_app
from initium.service.config import Settings
from initium.service.errors import ReportFailedError, ReportPendingError
from initium.service.jobs import submit as jobs
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.records import (
    FileJobRecords,
    report_done,
    retry_report,
    start_attempt,
    start_report,
    succeed,
)
from initium.service.jobs.store import REPORT, JobStore
from initium.service.pipeline import job as pipeline_job
from initium.service.pipeline import loop
from initium.service.pipeline.job import MAX_REPORT_ATTEMPTS, JobRun, execute_job, publish_report
from initium.service.pipeline.loop import Worker, run_one
from initium.service.plan.limits import Limits
from initium.service.plan.planner import make_plan
from initium.service.write.artifacts import ArtifactWriter
from tests.conftest import MLP_REQUEST

CPU = torch.device("cpu")
# An orthogonal weight (a whole-tensor law: read back from the file) beside elementwise ones.
MIXED_REQUEST: dict[str, Any] = {
    **copy.deepcopy(MLP_REQUEST),
    "policy": {
        "rules": [
            {"match": {"name": "fc1.weight"}, "init": {"scheme": "orthogonal"}},
            {"match": {"type": "linear", "role": "weight"}, "init": {"scheme": "kaiming_normal"}},
            {"match": {"role": "bias"}, "init": {"scheme": "uniform", "a": -0.1, "b": 0.1}},
        ]
    },
}


def submitted(tmp_path: Path, body: dict[str, Any]) -> tuple[JobStore, str]:
    store = JobStore(tmp_path)
    presets = PresetStore(tmp_path)
    status = jobs.submit(store, InitRequest.model_validate(body), Limits(), presets).status
    return store, status.id


def weights_only(store: JobStore, job_id: str) -> None:
    """One attempt that publishes the weights and stops before the report (a worker that died while
    computing it, or local mode, which computes it on first read)."""
    run_one(store, job_id, CPU, functools.partial(execute_job, with_report=False))


def test_a_job_succeeds_with_its_weights_and_its_report_follows(tmp_path: Path) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    record = store.records.load(job_id)
    assert (record.state, record.report_state) == ("succeeded", "pending")
    assert record.finished_at is not None
    # The weights are served; the report is a 409 report_pending that says when to ask again.
    assert jobs.weights_file(store, job_id, jobs.VerifiedFiles()).sha256 == record.sha256
    with pytest.raises(ReportPendingError) as pending:
        jobs.load_report(store, job_id)
    assert (pending.value.status, pending.value.type, pending.value.retry_after_s) == (409, "report_pending", 1)
    # The next worker to take the job computes only the report: the files and the record stay.
    run_one(store, job_id, CPU)
    done = store.records.load(job_id)
    assert (done.state, done.report_state, done.attempts, done.files) == ("succeeded", "ready", 1, record.files)
    assert done.finished_at == record.finished_at
    report = jobs.load_report(store, job_id)
    assert report.artifact.sha256 == record.sha256 and report.totals.tensors == 4


def test_statistics_after_the_write_equal_those_taken_while_writing(tmp_path: Path) -> None:
    """Summarize reads each tensor again (an elementwise law drawn again, orthogonal read back from
    the file): the statistics must be exactly those of the values as they were written."""
    store, job_id = submitted(tmp_path, MIXED_REQUEST)
    execute_job_running(store, job_id)
    after = Report.model_validate_json(store.artifacts.get(job_id, REPORT)).tensors
    run = JobRun.load(store, job_id, CPU)

    class Discard:
        name, bytes_written = "x", 0

        def write(self, chunk: bytes | memoryview) -> None:
            pass

        def commit(self) -> FileInfo:
            return FileInfo(name="x", sha256="0" * 64, size=0)

        def abort(self) -> None:
            pass

    sink: ArtifactWriter = Discard()
    run.write_shard(run.plan.shards[0], sink, lambda _: None, summarize=True)
    names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [t.name for t in after] == [t.name for t in run.stats] == names
    assert after == run.stats


def execute_job_running(store: JobStore, job_id: str) -> None:
    start_attempt(store.records, job_id, "test:1", 3)
    execute_job(store, job_id, CPU)


def test_a_report_that_cannot_be_computed_leaves_the_weights_and_is_retried_on_resubmission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)

    def broken_probe(*args: object) -> None:
        raise RuntimeError("the probe ran out of memory")

    monkeypatch.setattr(pipeline_job, "run_probe", broken_probe)
    run_one(store, job_id, CPU)
    record = store.records.load(job_id)
    assert (record.state, record.report_state) == ("succeeded", "failed")
    assert record.report_error is not None and "ran out of memory" in record.report_error.message
    assert "weights are not affected" in record.report_error.message
    assert jobs.weights_file(store, job_id, jobs.VerifiedFiles()).sha256 == record.sha256
    with pytest.raises(ReportFailedError, match="submit the request again"):
        jobs.load_report(store, job_id)
    # Resubmitting queues the job for its report alone; the worker computes it.
    monkeypatch.undo()
    store2, again = submitted(tmp_path, MLP_REQUEST)
    assert again == job_id and store2.records.load(job_id).report_state == "pending"
    assert job_id in store2.queued_ids()
    run_one(store2, job_id, CPU)
    assert store2.records.load(job_id).report_state == "ready"
    assert jobs.load_report(store2, job_id).artifact.sha256 == record.sha256


def test_report_states_in_the_records(tmp_path: Path) -> None:
    """succeed makes the report pending; a duplicate success never sets a ready report back to
    pending; report_done and retry_report change only a succeeded job's report; a record stored
    before reports had a state reads as ready when it succeeded."""
    records = FileJobRecords(tmp_path)
    request = InitRequest.model_validate(MLP_REQUEST)
    plan = make_plan(request)
    progress = Progress(tensors_done=0, tensors_total=4, bytes_done=0, bytes_total=plan.totals.bytes)
    record, _ = records.create(request, plan, progress)
    assert record.report_state == "pending"
    assert report_done(records, record.id).report_state == "pending"  # not succeeded: nothing to say
    assert retry_report(records, record.id) is False
    start_attempt(records, record.id, "test:1", 3)
    files = [FileInfo(name="model.safetensors", sha256="a" * 64, size=10)]
    assert succeed(records, record.id, files).report_state == "pending"
    assert report_done(records, record.id).report_state == "ready"
    assert succeed(records, record.id, files).report_state == "ready"  # a duplicate attempt's success
    assert retry_report(records, record.id) is False  # only a failed report is retried
    stored = records.load(record.id).model_dump(exclude={"report_state", "report_error", "finished_at"})
    assert JobRecord.model_validate(stored).report_state == "ready"
    assert JobRecord.model_validate({**stored, "state": "running"}).report_state == "pending"


def test_the_report_page_says_pending_to_a_browser_and_the_api_says_409(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cpu", embedded_worker=False)
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    with TestClient(create_app(settings)) as client:
        status = client.get(f"/v1/initializations/{job_id}").json()
        assert (status["state"], status["report_state"]) == ("succeeded", "pending")
        assert client.get(f"/v1/initializations/{job_id}/weights").status_code == 200
        answer = client.get(f"/v1/initializations/{job_id}/report")
        assert answer.status_code == 409 and answer.json()["error"]["type"] == "report_pending"
        assert answer.headers["retry-after"] == "1"
        page = client.get(f"/v1/initializations/{job_id}/report.html", headers={"Accept": "text/html"})
        assert page.status_code == 202 and page.headers["cache-control"] == "no-store"
        assert "Report pending" in page.text and 'http-equiv="refresh"' in page.text and job_id in page.text
        plain = client.get(f"/v1/initializations/{job_id}/report.html")
        assert plain.status_code == 409 and plain.json()["error"]["type"] == "report_pending"
        run_one(store, job_id, CPU)
        assert client.get(f"/v1/initializations/{job_id}").json()["report_state"] == "ready"
        assert client.get(f"/v1/initializations/{job_id}/report").status_code == 200
        html = client.get(f"/v1/initializations/{job_id}/report.html", headers={"Accept": "text/html"})
        assert html.status_code == 200 and "Report pending" not in html.text


def test_the_worker_publishes_every_waiting_jobs_weights_before_any_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, first = submitted(tmp_path, MLP_REQUEST)
    second = submitted(tmp_path, {**MLP_REQUEST, "seed": 1})[1]
    events: list[tuple[str, str]] = []
    succeeded, reported = pipeline_job.mark_succeeded, pipeline_job.publish_report

    def weights(store: JobStore, job_id: str, files: list[FileInfo]) -> None:
        events.append(("weights", job_id))
        succeeded(store, job_id, files)

    def report(store: JobStore, job_id: str, *args: Any) -> None:
        events.append(("report", job_id))
        reported(store, job_id, *args)

    monkeypatch.setattr(pipeline_job, "mark_succeeded", weights)
    monkeypatch.setattr(loop, "publish_report", report)
    Worker(store, CPU).run_pending()
    assert events == [("weights", first), ("weights", second), ("report", first), ("report", second)]
    assert [store.records.load(j).report_state for j in (first, second)] == ["ready", "ready"]
    assert store.queued_ids() == []  # dequeued once the report is in


def test_a_report_yields_to_waiting_weights_and_its_crashes_are_counted(tmp_path: Path) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    publish_report(store, job_id, None, CPU, yield_to=lambda: True)  # a job waits: the report stops
    record = store.records.load(job_id)
    assert (record.report_state, record.report_attempts) == ("pending", 0)  # that run is uncounted
    assert not store.artifacts.exists(job_id, REPORT)
    for _ in range(MAX_REPORT_ATTEMPTS):  # runs that died with their worker
        start_report(store.records, job_id, MAX_REPORT_ATTEMPTS, "gone:1")
    publish_report(store, job_id, None, CPU)
    record = store.records.load(job_id)
    assert record.report_state == "failed" and record.report_error is not None
    assert f"stopped {MAX_REPORT_ATTEMPTS} times" in record.report_error.message
    assert "weights are not affected" in record.report_error.message


def test_a_report_computed_later_gives_the_weights_stage_times(tmp_path: Path) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    run_one(store, job_id, CPU)  # the report alone, in a run of its own
    timings = jobs.load_report(store, job_id).provenance.timings
    assert timings.materialize > 0 and timings.write > 0 and timings.summarize > 0
    assert timings.total >= timings.materialize + timings.write + timings.summarize + timings.propagate


def test_a_report_yields_inside_the_probe_too(tmp_path: Path) -> None:
    """The probe reads the tensors again through the same source: a job arriving while it runs
    stops it as well (it used to run to its end, holding a queued job's weights back), and the stop
    is never mistaken for a failed probe."""
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    asked = iter(range(1_000))
    publish_report(store, job_id, None, CPU, yield_to=lambda: next(asked) >= 5)  # 4 summarized, then the probe
    record = store.records.load(job_id)
    assert (record.report_state, record.report_attempts) == ("pending", 0)
    assert not store.artifacts.exists(job_id, REPORT)
    publish_report(store, job_id, None, CPU)
    report = jobs.load_report(store, job_id)
    assert report.propagation is not None and report.propagation.skipped is None


def test_a_stopping_worker_stops_its_report_at_once_and_uncounted(tmp_path: Path) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    weights_only(store, job_id)
    worker = Worker(store, CPU)
    worker.stopping.set()
    assert worker.weights_waiting()
    publish_report(store, job_id, None, CPU, worker.weights_waiting)
    assert store.records.load(job_id).report_attempts == 0


def test_a_job_another_worker_runs_does_not_stop_a_report(tmp_path: Path) -> None:
    store, job_id = submitted(tmp_path, MLP_REQUEST)
    other = submitted(tmp_path, {**MLP_REQUEST, "seed": 3})[1]
    weights_only(store, job_id)
    worker = Worker(store, CPU)
    assert worker.weights_waiting()  # `other` is queued: its weights come first
    start_attempt(store.records, other, "elsewhere:1", 3)  # another worker took it
    worker._checked = 0.0
    assert not worker.weights_waiting()
