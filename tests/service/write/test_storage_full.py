"""A store with no room (issue 16, item 5): every write the local store makes on a full volume (a real
tmpfs the test mounts) raises InsufficientStorageError (507) that names the fix and no path and
leaves no partial file; a worker whose weights do not fit fails the job with that reason, and the
same id succeeds once the volume has room. S3's refusals for space (MinIO's codes, answered by
botocore's Stubber) raise the same error, and readiness reports the store full until a write passes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from botocore.stub import Stubber

from initium.schemas.request import InitRequest
from initium.service.api.routes.health import _artifacts
from initium.service.errors import InsufficientStorageError, volume_full_as_507
from initium.service.jobs.presets import PresetStore
from initium.service.jobs.store import LARGE, WEIGHTS, JobStore, heartbeat_name
from initium.service.jobs.submit import submit
from initium.service.pipeline.loop import Worker, run_one
from initium.service.plan.limits import Limits
from initium.service.write.artifacts import atomic_write
from initium.service.write.directory import LocalArtifacts
from initium.service.write.s3 import MIN_PART, PROBE_KEY, S3Artifacts

JOB = "ab" * 32
TMPFS_BYTES = 4 << 20


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for the test (a full disk in miniature), unmounted after it."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); CI runs the suite as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def free_bytes(mount: Path) -> int:
    return shutil.disk_usage(mount).free


def fill(mount: Path) -> Path:
    """Write zeros into `mount` until the volume refuses (ENOSPC); the filler file, to free space by
    deleting it."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f, pytest.raises(OSError) as refused:
        while True:  # ends only by the volume's refusal
            f.write(bytes(1 << 16))
    assert refused.value.errno == errno.ENOSPC and free_bytes(mount) == 0
    return filler


def leftovers(root: Path) -> list[str]:
    """Temporary files anywhere under root (atomic_write's .tmp, a writer's .partial)."""
    return sorted(p.name for p in root.rglob(".*") if p.is_file() and p.suffix in (".tmp", ".partial"))


def assert_names_the_fix(exc: InsufficientStorageError, mount: Path) -> None:
    assert exc.status == 507 and exc.type == "insufficient_storage" and exc.retry_after_s == 60
    assert "INITIUM_STORE_MAX_BYTES" in exc.message and str(mount) not in exc.message and "/" not in exc.message


def test_local_writes_on_a_full_volume_are_507_and_leave_nothing(tmpfs: Path) -> None:
    store = LocalArtifacts(tmpfs / "data")
    writer = store.writer(JOB, "weights.safetensors")
    with pytest.raises(InsufficientStorageError) as streamed:
        for _ in range(2 * TMPFS_BYTES >> 16):
            writer.write(bytes(1 << 16))
    writer.abort()
    assert streamed.value.reason == "ENOSPC"
    assert_names_the_fix(streamed.value, tmpfs)
    assert store.names(JOB) == [] and leftovers(tmpfs) == []
    assert free_bytes(tmpfs) == TMPFS_BYTES  # the aborted writer's bytes are all given back

    filler = fill(tmpfs)
    for write in (
        lambda: store.put(JOB, "report.json", b"{}" * 4096),
        lambda: store.put_report(JOB, b"{}" * 4096),
        lambda: atomic_write(tmpfs / "data" / "jobs" / JOB / "job.json", b"{}" * 4096),
    ):
        with pytest.raises(InsufficientStorageError) as small:
            write()
        assert small.value.reason == "ENOSPC"
        assert_names_the_fix(small.value, tmpfs)
    assert store.names(JOB) == [] and leftovers(tmpfs) == [] and store.get_report(JOB) is None
    store.touch(JOB)  # a download's access stamp never fails it (an empty file needs no block here)
    assert store.names(JOB) == ["accessed"]

    filler.unlink()
    assert store.put(JOB, "report.json", b"{}").size == 2 and store.get_report(JOB) is None


def test_presets_on_a_full_volume_are_507_and_publish_once_there_is_room(tmpfs: Path) -> None:
    from initium.schemas.presets import Preset

    presets = PresetStore(tmpfs / "data")
    preset = Preset.model_validate(
        {"name": "house", "version": 1, "description": "zero biases",
         "rules": [{"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]}
    )  # fmt: skip
    filler = fill(tmpfs)
    with pytest.raises(InsufficientStorageError) as refused:
        presets.publish(preset)
    assert "the preset house@1" in refused.value.message
    assert_names_the_fix(refused.value, tmpfs)
    assert leftovers(tmpfs) == [] and list((tmpfs / "data" / "presets").iterdir()) == []
    filler.unlink()
    assert presets.publish(preset) == (preset, True)


def test_a_worker_whose_weights_do_not_fit_fails_the_job_and_the_same_id_succeeds_with_room(
    tmpfs: Path, mlp_request: dict[str, Any]
) -> None:
    # fc1 of 1400 x 784 float32 is 4.39 MB of weights: more than the 4 MiB (4.19 MB) volume holds.
    mlp_request["spec"]["modules"][0]["out_features"] = 1400
    mlp_request["spec"]["modules"][2]["in_features"] = 1400
    request = InitRequest.model_validate(mlp_request)
    store = JobStore(tmpfs / "data")
    presets = PresetStore(tmpfs / "data")
    job_id = submit(store, request, Limits(10**9, 10**4), presets).status.id
    run_one(store, job_id, torch.device("cpu"))
    record = store.records.load(job_id)
    assert record.state == "failed" and record.error is not None
    assert "has no room for the artifact" in record.error.message and "weights.safetensors" in record.error.message
    assert "INITIUM_STORE_MAX_BYTES" in record.error.message and str(tmpfs) not in record.error.message
    assert leftovers(tmpfs) == [] and not store.artifact(job_id, WEIGHTS).exists()

    # More room (a tmpfs grows in place), then the same request: the failed job restarts under its id.
    subprocess.run(["mount", "-o", f"remount,size={4 * TMPFS_BYTES}", str(tmpfs)], check=True)
    again = submit(store, request, Limits(10**9, 10**4), presets)
    assert again.created and again.status.id == job_id
    run_one(store, job_id, torch.device("cpu"))
    record = store.records.load(job_id)
    assert record.state == "succeeded" and record.size == os.path.getsize(store.artifact(job_id, WEIGHTS))


# --- S3: the codes MinIO and other S3-compatible servers refuse a write with for space --------------


def stubbed() -> tuple[S3Artifacts, Stubber]:
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s", endpoint_url="http://s3.test"
    )
    return S3Artifacts("bucket", "p", client=client), Stubber(client)


@pytest.mark.parametrize(
    ("code", "status", "marks_full"),
    [
        ("XMinioStorageFull", 507, True),  # MinIO's drives below their free threshold
        ("XMinioAdminBucketQuotaExceeded", 400, True),  # a MinIO bucket quota
        ("QuotaExceeded", 403, True),  # Ceph RGW's quota
        ("InsufficientStorage", 507, True),  # any 507
        ("EntityTooLarge", 400, False),  # one object too large: the store is not full
    ],
)
def test_s3_refusals_for_space_are_507(code: str, status: int, marks_full: bool) -> None:
    s3, stub = stubbed()
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
    with stub, pytest.raises(InsufficientStorageError) as refused:
        s3.put(JOB, "report.json", b"{}")
    assert refused.value.status == 507 and refused.value.reason == code
    assert "INITIUM_ARTIFACT_STORE" in refused.value.message and "'bucket'" not in refused.value.message
    assert "s3.test" not in refused.value.message and "p/jobs" not in refused.value.message
    assert (s3.refused == code) is marks_full


def marked(s3: S3Artifacts) -> str | None:
    """The store's mark of a refusal for space (read through a call: each read may differ)."""
    return s3.refused


def test_a_full_s3_store_is_not_ready_until_a_probe_write_passes(tmp_path: Path) -> None:
    s3, stub = stubbed()
    store = JobStore(tmp_path / "data", artifacts=s3)
    with stub:
        stub.add_client_error("put_object", service_error_code="XMinioStorageFull", http_status_code=507)
        s3.touch(JOB)  # a download's access stamp: refused, logged, the download goes on
        assert marked(s3) == "XMinioStorageFull"
        probe = {"Bucket": "bucket", "Key": f"p/{PROBE_KEY}", "Body": bytes(MIN_PART)}
        stub.add_response("head_bucket", {}, {"Bucket": "bucket"})
        stub.add_client_error("put_object", service_error_code="XMinioStorageFull", http_status_code=507,
                              expected_params=probe)  # fmt: skip
        assert _artifacts(store) == "full (XMinioStorageFull)"
        stub.add_response("head_bucket", {}, {"Bucket": "bucket"})
        stub.add_response("put_object", {}, probe)
        stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": f"p/{PROBE_KEY}"})
        assert _artifacts(store) == "ok" and marked(s3) is None
        stub.add_response("head_bucket", {}, {"Bucket": "bucket"})
        assert _artifacts(store) == "ok"  # no probe once the store took a write
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("failing", ["plan", "marker"])
def test_a_job_whose_records_or_marker_do_not_fit_is_not_created(
    tmp_path: Path, mlp_request: dict[str, Any], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A submission that runs out of room half way leaves no job (no record without its plan, no
    queued job without its queue marker, which nothing would ever run) and no stray file; the same
    request succeeds under the same id once there is room."""
    store, presets = JobStore(tmp_path), PresetStore(tmp_path)
    request = InitRequest.model_validate(mlp_request)
    real_write, real_enqueue = atomic_write, store.enqueue

    def plan_does_not_fit(path: Path, data: Any) -> None:
        if path.name == "plan.json":
            with volume_full_as_507(path.name):  # as the real atomic_write reports it
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    def marker_does_not_fit(job_id: str, lane: str = "large") -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "queue" / job_id))

    if failing == "plan":
        monkeypatch.setattr("initium.service.jobs.records.atomic_write", plan_does_not_fit)
    else:
        monkeypatch.setattr(store, "enqueue", marker_does_not_fit)
    with pytest.raises(InsufficientStorageError) as refused:
        submit(store, request, Limits(), presets)
    assert str(tmp_path) not in refused.value.message
    assert not any(store.records.exists(job.name) for job in (tmp_path / "jobs").iterdir())
    assert not [p.name for p in (tmp_path / "jobs").rglob("*.json")]  # neither request.json nor plan.json stayed
    monkeypatch.setattr("initium.service.jobs.records.atomic_write", real_write)
    monkeypatch.setattr(store, "enqueue", real_enqueue)
    submitted = submit(store, request, Limits(), presets)
    assert submitted.created and store.queued_ids() == [submitted.status.id]


def test_a_worker_started_on_a_full_volume_beats_once_there_is_room(tmpfs: Path) -> None:
    # Round two of issue 16: the heartbeat thread died on ENOSPC, so /readyz said the worker was down
    # for good after the space came back.
    worker = Worker(JobStore(tmpfs / "data"), torch.device("cpu"))
    beat = tmpfs / "data" / heartbeat_name(LARGE)
    filler = fill(tmpfs)
    thread = threading.Thread(target=worker._heartbeat, daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        assert thread.is_alive() and not beat.exists()
        filler.unlink()
        deadline = time.monotonic() + 5
        while not beat.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert beat.read_text() == str(os.getpid())
        assert not [p.name for p in (tmpfs / "data").iterdir() if p.name.startswith(".")]  # no temporary beat left
    finally:
        worker.stopping.set()
        thread.join(5)
