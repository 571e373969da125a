"""Write: the artifact store on S3-compatible object storage (AWS S3, MinIO, moto) over boto3.

    s3://<bucket>/<prefix>jobs/<id>/<name>     a job's artifacts
    s3://<bucket>/<prefix>reports/<id>.json    reports kept for the record

A writer is a multipart upload: chunks are buffered into parts of `part_size` bytes (S3 refuses
parts under 5 MiB except the last), the upload is completed on commit (the object appears whole,
atomically) and aborted on abort. A file smaller than one part is a single put_object. A stamp is
the object's size and ETag. Region and credentials come from the standard AWS variables, which
boto3 reads itself; INITIUM_S3_ENDPOINT_URL points at MinIO or another S3-compatible server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from initium.schemas.job import FileInfo
from initium.service.identity import check_id
from initium.service.write.artifacts import (
    ACCESSED,
    READ_CHUNK,
    ArtifactWriter,
    HashingWriter,
    Stamp,
    Usage,
    check_name,
    compose_by_copy,
)

MIN_PART = 5 << 20  # S3's minimum size of every part but the last
# 64 MiB parts: S3 allows 10,000 parts, so one file may reach 640 GB; a writer buffers one part.
PART_SIZE = 64 << 20
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


@functools.cache
def _client(endpoint_url: str | None) -> Any:
    """One client per endpoint (boto3 clients are thread-safe; creating one costs ~50 ms). Path-style
    addressing for a custom endpoint: MinIO and moto serve buckets as paths, not host names. Checksums
    only where S3 requires them, which every S3-compatible server accepts."""
    style = {"addressing_style": "path"} if endpoint_url else {}
    config = Config(
        s3=style, request_checksum_calculation="when_required", response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
    )  # fmt: skip
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class _MultipartWriter(HashingWriter):
    def __init__(self, client: Any, bucket: str, key: str, name: str, part_size: int) -> None:
        super().__init__(name)
        self._client, self._bucket, self._key, self._part_size = client, bucket, key, part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def _store(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        if self._buffer:
            take = self._part_size - len(self._buffer)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) < self._part_size:
                return
            self._upload(bytes(self._buffer))
            self._buffer = bytearray()
        while len(view) >= self._part_size:  # a large tensor goes up without passing through the buffer
            self._upload(bytes(view[: self._part_size]))
            view = view[self._part_size :]
        self._buffer += view

    def _upload(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        answer = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _finish(self) -> None:
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._upload(bytes(self._buffer))
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except ClientError as exc:  # already aborted by a cleanup: nothing left either way
                if str(exc.response.get("Error", {}).get("Code")) != "NoSuchUpload":
                    raise


class S3Artifacts:
    """Artifacts in an S3 bucket under an optional key prefix (see the module docstring)."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, part_size: int = PART_SIZE,
        client: Any = None,
    ) -> None:  # fmt: skip
        if not bucket:
            raise ValueError("an S3 artifact store needs a bucket: s3://bucket/prefix")
        if part_size < MIN_PART:
            raise ValueError(f"part_size {part_size}: S3 needs parts of at least {MIN_PART} bytes")
        self.bucket, self.part_size = bucket, part_size
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client if client is not None else _client(endpoint_url)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (a fresh MinIO); an existing one is left as it is."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as race:  # another process created it meanwhile
                if str(race.response.get("Error", {}).get("Code")) not in ("BucketAlreadyOwnedByYou",):
                    raise

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}jobs/{check_id(job_id)}/"

    def key(self, job_id: str, name: str) -> str:
        return self._job(job_id) + check_name(name)

    def writer(self, job_id: str, name: str) -> ArtifactWriter:
        return _MultipartWriter(self.client, self.bucket, self.key(job_id, name), name, self.part_size)

    def put(self, job_id: str, name: str, data: bytes) -> FileInfo:
        writer = self.writer(job_id, name)
        writer.write(data)
        return writer.commit()

    def get(self, job_id: str, name: str) -> bytes:
        return b"".join(self.read(job_id, name))

    def exists(self, job_id: str, name: str) -> bool:
        return self.stamp(job_id, name) is not None

    def compose(self, job_id: str, name: str, header: bytes, parts: Sequence[str]) -> FileInfo:
        return compose_by_copy(self, job_id, name, header, parts)

    def stamp(self, job_id: str, name: str) -> Stamp | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return Stamp(size=int(head["ContentLength"]), version=str(head["ETag"]).strip('"'))

    def read(self, job_id: str, name: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self._read(self.key(job_id, name), start, end)

    def _read(self, key: str, start: int, end: int | None) -> Iterator[bytes]:
        if end is not None and end <= start:
            return iter(())
        extra = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else {}
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from None
            raise
        return _chunks(body)

    def _keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            yield from page.get("Contents", [])

    def names(self, job_id: str) -> list[str]:
        base = self._job(job_id)
        return sorted(o["Key"][len(base) :] for o in self._keys(base))

    def delete(self, job_id: str, names: Iterable[str]) -> None:
        self._delete_keys([self.key(job_id, name) for name in names])

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # S3 deletes at most 1,000 keys per request
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def delete_job(self, job_id: str) -> None:
        self.clean(job_id)
        self._delete_keys([o["Key"] for o in self._keys(self._job(job_id))])

    def clean(self, job_id: str) -> None:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._job(job_id)
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code")) != "NoSuchUpload":
                        raise

    def touch(self, job_id: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, ACCESSED), Body=b"")

    def usage(self, job_id: str) -> Usage:
        size, used = 0, None
        base = self._job(job_id)
        for o in self._keys(base):
            size += int(o["Size"])
            if o["Key"] == base + ACCESSED:
                modified: datetime = o["LastModified"]
                used = modified.timestamp()
        return Usage(bytes=size, last_used=used)

    def _report_key(self, request_id: str) -> str:
        return f"{self.prefix}reports/{check_id(request_id)}.json"

    def put_report(self, request_id: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._report_key(request_id), Body=data)

    def get_report(self, request_id: str) -> bytes | None:
        try:
            return b"".join(self._read(self._report_key(request_id), 0, None))
        except FileNotFoundError:
            return None


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(READ_CHUNK)
    finally:
        body.close()
