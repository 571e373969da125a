"""The artifact store, both implementations through one interface: a local directory and S3 (a real
S3 API server, moto's, started by the s3_endpoint fixture)."""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from initium.service.errors import JobNotFoundError
from initium.service.write.artifacts import Artifacts, hashed_sha256, open_artifacts, record_hashed, sha256_of
from initium.service.write.directory import LocalArtifacts
from initium.service.write.s3 import MIN_PART, S3Artifacts

JOB = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Artifacts]:
    if request.param == "local":
        yield LocalArtifacts(tmp_path)
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = S3Artifacts(f"t-{uuid.uuid4().hex[:12]}", "some/prefix", endpoint_url=endpoint, part_size=MIN_PART)
    s3.ensure_bucket()
    yield s3


def _write(store: Artifacts, name: str, chunks: list[bytes], job: str = JOB) -> tuple[bytes, str]:
    writer = store.writer(job, name)
    for chunk in chunks:
        writer.write(chunk)
    info = writer.commit()
    data = b"".join(chunks)
    assert (info.name, info.size) == (name, len(data)) and writer.bytes_written == len(data)
    return data, info.sha256


def _leftovers(store: Artifacts) -> list[str]:
    """Unfinished writes: temporary files, or multipart uploads not completed."""
    if isinstance(store, LocalArtifacts):
        return [p.name for p in store.root.rglob(".*.partial")]
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [u["Key"] for u in uploads]


def test_a_committed_file_has_the_sha256_of_its_bytes(store: Artifacts) -> None:
    writer = store.writer(JOB, "weights.safetensors")
    writer.write(b"header")
    writer.write(memoryview(b"-and-data"))
    assert not store.exists(JOB, "weights.safetensors") and store.names(JOB) == []  # invisible until commit
    info = writer.commit()
    assert info.sha256 == hashlib.sha256(b"header-and-data").hexdigest() and info.size == 15
    assert store.get(JOB, "weights.safetensors") == b"header-and-data"
    assert store.exists(JOB, "weights.safetensors") and store.names(JOB) == ["weights.safetensors"]
    assert sha256_of(store, JOB, "weights.safetensors") == info.sha256


def test_a_file_of_several_parts(store: Artifacts) -> None:
    """Past 5 MiB, S3 takes the file as a multipart upload; chunks of any size, one larger than a part."""
    rng = random.Random(0)
    chunks = [rng.randbytes(n) for n in (1 << 20, 7 << 20, 3, 3 << 20)]
    data, sha = _write(store, "big.data", chunks)
    assert sha == hashlib.sha256(data).hexdigest()
    assert b"".join(store.read(JOB, "big.data")) == data
    stamp = store.stamp(JOB, "big.data")
    assert stamp is not None and stamp.size == len(data)
    if isinstance(store, S3Artifacts):
        assert stamp.version.endswith("-3")  # a multipart ETag: three parts of 5, 5 and 1 MiB
    assert _leftovers(store) == []


def test_an_aborted_writer_leaves_nothing(store: Artifacts) -> None:
    writer = store.writer(JOB, "weights.safetensors")
    writer.write(os.urandom(MIN_PART + 10))  # S3: one part already uploaded
    writer.abort()
    assert store.names(JOB) == [] and _leftovers(store) == []
    with pytest.raises(ValueError, match="already committed or aborted"):
        writer.write(b"x")


def test_a_duplicate_attempt_commits_the_same_bytes(store: Artifacts) -> None:
    first, second = store.writer(JOB, "w.safetensors"), store.writer(JOB, "w.safetensors")
    for w in (first, second):
        w.write(b"same bytes")
    assert first.commit() == second.commit()
    assert store.get(JOB, "w.safetensors") == b"same bytes" and _leftovers(store) == []


def test_small_objects_and_missing_ones(store: Artifacts) -> None:
    info = store.put(JOB, "parts/lsuv.json", b"{}")
    assert info.sha256 == hashlib.sha256(b"{}").hexdigest()
    assert store.get(JOB, "parts/lsuv.json") == b"{}" and store.exists(JOB, "parts/lsuv.json")
    store.put(JOB, "parts/lsuv.json", b'{"a": 1}')  # replaced whole
    assert store.get(JOB, "parts/lsuv.json") == b'{"a": 1}'
    assert not store.exists(JOB, "report.json") and store.stamp(JOB, "report.json") is None
    with pytest.raises(FileNotFoundError):
        store.get(JOB, "report.json")
    with pytest.raises(FileNotFoundError):
        store.read(JOB, "report.json")


def test_compose_hashes_the_whole_file(store: Artifacts) -> None:
    big = os.urandom(MIN_PART + 123)
    store.put(JOB, "parts/0.data", b"first")
    _write(store, "parts/1.data", [big])
    store.put(JOB, "parts/2.data", b"")
    info = store.compose(JOB, "weights.safetensors", b"HEADER", ["parts/0.data", "parts/1.data", "parts/2.data"])
    whole = b"HEADER" + b"first" + big
    assert info.sha256 == hashlib.sha256(whole).hexdigest() and info.size == len(whole)
    assert b"".join(store.read(JOB, "weights.safetensors")) == whole
    with pytest.raises(FileNotFoundError):
        store.compose(JOB, "other.safetensors", b"H", ["parts/9.data"])
    assert not store.exists(JOB, "other.safetensors") and _leftovers(store) == []


def test_byte_ranges(store: Artifacts) -> None:
    data = bytes(range(256)) * 10
    store.put(JOB, "w.safetensors", data)
    assert b"".join(store.read(JOB, "w.safetensors", 100, 200)) == data[100:200]
    assert b"".join(store.read(JOB, "w.safetensors", 1000)) == data[1000:]
    assert b"".join(store.read(JOB, "w.safetensors", 5, 5)) == b""
    assert b"".join(store.read(JOB, "w.safetensors", 0, len(data))) == data


def test_stamps_tell_an_untouched_file_from_a_changed_one(store: Artifacts) -> None:
    _, sha = _write(store, "w.safetensors", [b"original bytes"])
    stamp = store.stamp(JOB, "w.safetensors")
    assert stamp is not None and stamp.size == 14 and stamp == store.stamp(JOB, "w.safetensors")
    record_hashed(store, JOB, [store.compose(JOB, "w.safetensors", b"original bytes", [])])
    now = store.stamp(JOB, "w.safetensors")
    assert now is not None and hashed_sha256(store, JOB, "w.safetensors", now) == sha
    # Other bytes of the same size: a new inode and mtime locally, another ETag (an md5) on S3.
    store.put(JOB, "w.safetensors", b"changed bytes!")
    changed = store.stamp(JOB, "w.safetensors")
    assert changed is not None and changed != now and hashed_sha256(store, JOB, "w.safetensors", changed) is None
    assert hashed_sha256(store, JOB, "missing.safetensors", now) is None


def test_delete_clean_and_delete_job(store: Artifacts) -> None:
    for name in ("weights.safetensors", "report.json", "parts/0.data", "parts/0.json"):
        store.put(JOB, name, name.encode())
    store.put(OTHER, "report.json", b"kept")
    store.delete(JOB, [n for n in store.names(JOB) if n.startswith("parts/")] + ["parts/gone.data"])
    assert store.names(JOB) == ["report.json", "weights.safetensors"]
    unfinished = store.writer(JOB, "x.data")  # a worker that died mid-write
    unfinished.write(os.urandom(MIN_PART + 1))
    store.clean(JOB)
    assert _leftovers(store) == [] and store.names(JOB) == ["report.json", "weights.safetensors"]
    unfinished.abort()  # what the dead worker can no longer do: nothing left to abort, no error
    store.delete_job(JOB)
    assert store.names(JOB) == [] and store.get(OTHER, "report.json") == b"kept"


def test_usage_for_eviction(store: Artifacts) -> None:
    store.put(JOB, "weights.safetensors", b"x" * 1000)
    store.put(JOB, "report.json", b"y" * 24)
    before = store.usage(JOB)
    assert before.bytes == 1024 and before.last_used is None
    store.touch(JOB)
    after = store.usage(JOB)
    assert after.last_used is not None and abs(after.last_used - time.time()) < 60
    assert after.bytes == 1024  # the marker is empty
    assert store.usage(OTHER).bytes == 0


def test_reports_for_the_record(store: Artifacts) -> None:
    assert store.get_report(JOB) is None
    store.put_report(JOB, b'{"r": 1}')
    assert store.get_report(JOB) == b'{"r": 1}' and store.names(JOB) == []


def test_names_and_ids_are_validated(store: Artifacts) -> None:
    for bad in ("../x", ".hidden", "a/b/c", "", "parts/../../x", "x/.y"):
        with pytest.raises(ValueError, match="not an artifact name"):
            store.writer(JOB, bad)
    with pytest.raises(JobNotFoundError):
        store.get("../etc", "report.json")
    with pytest.raises(JobNotFoundError):
        store.put_report("not-an-id", b"")


def test_open_artifacts_by_setting(tmp_path: Path, s3_endpoint: str) -> None:
    assert isinstance(open_artifacts("local", tmp_path), LocalArtifacts)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3 = open_artifacts(f"s3://{bucket}/deploy/one", tmp_path, s3_endpoint)  # creates the bucket
    assert isinstance(s3, S3Artifacts) and s3.prefix == "deploy/one/"
    s3.put(JOB, "report.json", b"{}")
    assert s3.client.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"] == f"deploy/one/jobs/{JOB}/report.json"
    with pytest.raises(ValueError, match="use 'local' or 's3://bucket/prefix'"):
        open_artifacts("gs://bucket", tmp_path)
