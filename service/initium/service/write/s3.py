"""Write: the artifact store on S3-compatible object storage (AWS S3, MinIO, moto) over boto3.

    s3://<bucket>/<prefix>jobs/<id>/<name>     a job's artifacts
    s3://<bucket>/<prefix>reports/<id>.json    reports kept for the record

A writer is a multipart upload: chunks are buffered into parts of `part_size` bytes (S3 refuses
parts under 5 MiB except the last), the upload is completed on commit (the object appears whole,
atomically) and aborted on abort. A file smaller than one part is a single put_object. A stamp is
the object's size and ETag. Region and credentials come from the standard AWS variables, which
boto3 reads itself; INITIUM_S3_ENDPOINT_URL points at MinIO or another S3-compatible server.

A store that is down (unreachable, timing out, throttling, answering 5xx, its bucket gone) raises
StoreUnavailableError (the API answers 503 with Retry-After), never botocore's own exceptions; an
object missing from a bucket that answers stays what it is (None, FileNotFoundError). A write the
store refuses for space (MinIO's XMinioStorageFull, a bucket quota, any 507) raises
InsufficientStorageError (507), and readiness reports the store full until a later write succeeds
(see [Note: S3 full]).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from initium.schemas.job import FileInfo
from initium.service.errors import InsufficientStorageError, StoreUnavailableError
from initium.service.identity import JOB_ID, check_id
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

log = logging.getLogger("initium.store")
P = ParamSpec("P")
R = TypeVar("R")

MIN_PART = 5 << 20  # S3's minimum size of every part but the last
# 64 MiB parts: S3 allows 10,000 parts, so one file may reach 640 GB; a writer buffers one part.
PART_SIZE = 64 << 20
_MISSING = {"404", "NoSuchKey", "NotFound"}  # an object (or, for head_bucket, the bucket) is not there
# Codes that say "not now" rather than "no": throttling, the server's own failures, a stalled upload.
_NOT_NOW = {"SlowDown", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestLimitExceeded",
            "RequestTimeout", "InternalError", "NoSuchBucket"}  # fmt: skip
# Codes that refuse a write for space: MinIO below its free-drive threshold (507) or over a bucket
# quota (400, from MinIO's cmd/api-errors.go); other S3-compatible servers' quota (Ceph RGW:
# QuotaExceeded); an object larger than the server takes. Any HTTP 507 counts too (RFC 4918).
_FULL = {"XMinioStorageFull", "XMinioAdminBucketQuotaExceeded", "QuotaExceeded", "EntityTooLarge"}
_TOO_LARGE = "EntityTooLarge"  # one object too large: the store itself is not full
PROBE_KEY = "readiness-probe"  # the object a full store's readiness check writes, then deletes
# Causes a readiness probe names when the store refuses this host (for the message's fix).
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoCredentialsError"}
# Refused or unreachable endpoints, timeouts, connections cut mid-answer, bodies cut short.
_TRANSPORT = (BotoConnectionError, HTTPClientError, IncompleteReadError)

# [Note: S3 patience] How long each caller waits before it calls the store down. A worker rides
# out a blip (6 attempts, standard backoff; the read timeout stays botocore's 60 s for large
# parts): its upload follows minutes of compute. The API fails fast and answers 503 with
# Retry-After, since its caller retries anyway and two layers of 6 attempts would take minutes to
# report a down store: a refused connection answers at once, a hung server within ~10 s (2 attempts
# of 5 s). Readiness asks once, within ~2 s (measured: 1.1 s against a server that never answers;
# the compose healthcheck gives /readyz 3 s). botocore's default of 60 s per connect attempt would
# make a blackholed endpoint look like a hang.
_PROFILES: dict[str, dict[str, Any]] = {
    "worker": {"retries": {"mode": "standard", "total_max_attempts": 6}, "connect_timeout": 10},
    "serving": {"retries": {"mode": "standard", "total_max_attempts": 2}, "connect_timeout": 2, "read_timeout": 5},
    "probe": {"retries": {"mode": "standard", "total_max_attempts": 1}, "connect_timeout": 1, "read_timeout": 1},
}


@functools.cache
def _client(endpoint_url: str | None, profile: str = "worker") -> Any:
    """One client per endpoint and profile (boto3 clients are thread-safe; creating one costs ~50 ms).
    Path-style addressing for a custom endpoint: MinIO and moto serve buckets as paths, not host
    names. Checksums only where S3 requires them, which every S3-compatible server accepts."""
    style = {"addressing_style": "path"} if endpoint_url else {}
    config = Config(
        s3=style, request_checksum_calculation="when_required", response_checksum_validation="when_required",
        **_PROFILES[profile],
    )  # fmt: skip
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code"))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in _MISSING


def _full(exc: BotoCoreError | ClientError) -> str | None:
    """The code when `exc` refuses a write for space (see _FULL); None otherwise."""
    if not isinstance(exc, ClientError):
        return None
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return _code(exc) if _code(exc) in _FULL or status == 507 else None


def _down(exc: BotoCoreError | ClientError) -> str | None:
    """The short cause when `exc` says the store is down or refusing for now; None for what waiting
    does not cure (a missing key, a refused request, missing credentials)."""
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return _code(exc) if _code(exc) in _NOT_NOW or status >= 500 else None
    return type(exc).__name__ if isinstance(exc, _TRANSPORT) else None


def _guarded(method: Callable[Concatenate[S3Artifacts, P], R]) -> Callable[Concatenate[S3Artifacts, P], R]:
    """An S3Artifacts method whose store failures raise StoreUnavailableError (see `available`)."""

    @functools.wraps(method)
    def call(store: S3Artifacts, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with store.available():
            return method(store, *args, **kwargs)

    return call


class _MultipartWriter(HashingWriter):
    def __init__(self, store: S3Artifacts, key: str, name: str) -> None:
        super().__init__(name)
        self._s3, self._client, self._bucket, self._key = store, store.client, store.bucket, key
        self._part_size = store.part_size
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
        with self._s3.available():
            if self._upload_id is None:
                self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
            number = len(self._parts) + 1
            answer = self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
            )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def _finish(self) -> None:
        if self._upload_id is None:
            with self._s3.available(write=True):
                self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._upload(bytes(self._buffer))
        with self._s3.available(write=True):
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            with self._s3.available():
                self._s3.abort_upload(self._key, self._upload_id)


class S3Artifacts:
    """Artifacts in an S3 bucket under an optional key prefix (see the module docstring). `serving`
    picks the API's fail-fast client over the worker's patient one (see [Note: S3 patience])."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, part_size: int = PART_SIZE,
        client: Any = None, serving: bool = False,
    ) -> None:  # fmt: skip
        if not bucket:
            raise ValueError("an S3 artifact store needs a bucket: s3://bucket/prefix")
        if part_size < MIN_PART:
            raise ValueError(f"part_size {part_size}: S3 needs parts of at least {MIN_PART} bytes")
        self.bucket, self.part_size, self.endpoint_url = bucket, part_size, endpoint_url
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client if client is not None else _client(endpoint_url, "serving" if serving else "worker")
        self._probe = client  # the readiness client, made on first use unless one was given
        self.refused: str | None = None  # the code of this process's last write refused for space

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def unavailable(self, reason: str) -> StoreUnavailableError:
        """The error that says this store is down, naming it, the cause and the fix."""
        where = self.endpoint_url or "AWS S3"
        if reason == "NoSuchBucket":
            fix = (
                f"the bucket {self.bucket!r} does not exist at {where}: create it (a worker creates it when it "
                "starts) or correct INITIUM_ARTIFACT_STORE"
            )
        elif reason in _DENIED:
            fix = f"{where} refuses this host's credentials: check the AWS_* variables and the bucket's policy"
        else:
            fix = f"check that {where} (INITIUM_S3_ENDPOINT_URL) is up and reachable from the API and the workers"
        return StoreUnavailableError(f"the artifact store {self.url} is unavailable ({reason}): {fix}; retry later",
                                     reason=reason)  # fmt: skip

    def no_room(self, reason: str) -> InsufficientStorageError:
        """The error that says this store refused a write for space (`reason`: the S3 code), with the
        fix; it names no bucket, endpoint or key."""
        if reason == _TOO_LARGE:
            what = "an object larger than it accepts (EntityTooLarge)"
            fix = "raise the server's object size limit, or ask for sharded output (output.format 'sharded')"
        else:
            quota = "Quota" in reason
            what = f"a write: {'the bucket is over its quota' if quota else 'its drives are full'} ({reason})"
            fix = (
                f"{'raise the quota or ' if quota else ''}free space in the object store, or set "
                "INITIUM_STORE_MAX_BYTES so that eviction keeps finished jobs within a size"
            )
        return InsufficientStorageError(
            f"the object store (INITIUM_ARTIFACT_STORE) refused {what}: {fix}; nothing partial was kept: "
            "retry once there is space",
            reason=reason,
        )

    @contextlib.contextmanager
    def available(self, write: bool = False) -> Iterator[None]:
        """Inside: a refused or unreachable endpoint, a timeout, throttling, a 5xx or a missing bucket
        raises StoreUnavailableError; a write refused for space raises InsufficientStorageError and
        marks the store full (`refused`); anything else (a missing key, access denied) passes as it
        is. A `write` that succeeds clears the mark (see [Note: S3 full])."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            full = _full(exc)
            if full is not None:
                if full != _TOO_LARGE:
                    self.refused = full
                raise self.no_room(full) from exc
            reason = _down(exc)
            if reason is None:
                raise
            raise self.unavailable(reason) from exc
        if write:
            self.refused = None

    def check(self) -> None:
        """For readiness: the bucket answers a HEAD, once, within ~2 s; StoreUnavailableError with the
        cause otherwise (any failure counts here: a 403 is as not-ready as a refused connection).
        A store that refused a write for space must also take a probe write, else
        InsufficientStorageError (see [Note: S3 full])."""
        if self._probe is None:
            self._probe = _client(self.endpoint_url, "probe")
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            raise self.unavailable("NoSuchBucket" if _missing(exc) else _code(exc)) from exc
        except BotoCoreError as exc:
            raise self.unavailable(type(exc).__name__) from exc
        if self.refused is not None:
            self._probe_write()

    def _probe_write(self) -> None:
        # [Note: S3 full] A refusal for space is seen only by the process whose write it was (a
        # worker's upload fails its job with the reason; the API's own writes are access stamps and
        # reports). `refused` keeps the store "full" for readiness until a write succeeds; while it
        # is set, readiness writes one part's minimum (5 MiB) and deletes it: MinIO checks each write
        # against its size (cmd/object-api-utils.go hasSpaceFor), so an empty object would pass on
        # drives that still refuse every part.
        key = self.prefix + PROBE_KEY
        with self.available(write=True):
            self._probe.put_object(Bucket=self.bucket, Key=key, Body=bytes(MIN_PART))
            self._probe.delete_object(Bucket=self.bucket, Key=key)

    @_guarded
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
                if _code(race) not in ("BucketAlreadyOwnedByYou",):
                    raise

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}jobs/{check_id(job_id)}/"

    def key(self, job_id: str, name: str) -> str:
        return self._job(job_id) + check_name(name)

    def writer(self, job_id: str, name: str) -> ArtifactWriter:
        return _MultipartWriter(self, self.key(job_id, name), name)

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

    @_guarded
    def stamp(self, job_id: str, name: str) -> Stamp | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except ClientError as exc:
            if not _missing(exc):
                raise
            self._require_bucket()
            return None
        return Stamp(size=int(head["ContentLength"]), version=str(head["ETag"]).strip('"'))

    def _require_bucket(self) -> None:
        # A HEAD's 404 has no body to tell a missing key from a missing bucket; a job whose bucket
        # is gone is not corrupt (that would fail it for good): its store is down.
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _missing(exc):
                raise self.unavailable("NoSuchBucket") from exc
            raise

    def read(self, job_id: str, name: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return self._read(self.key(job_id, name), start, end)

    @_guarded
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
        return self._chunks(body)

    def _chunks(self, body: Any) -> Iterator[bytes]:
        with self.available(), contextlib.closing(body):
            yield from body.iter_chunks(READ_CHUNK)

    def _keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            yield from page.get("Contents", [])

    @_guarded
    def names(self, job_id: str) -> list[str]:
        base = self._job(job_id)
        return sorted(o["Key"][len(base) :] for o in self._keys(base))

    @_guarded
    def delete(self, job_id: str, names: Iterable[str]) -> None:
        self._delete_keys([self.key(job_id, name) for name in names])

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # S3 deletes at most 1,000 keys per request
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    @_guarded
    def delete_job(self, job_id: str) -> None:
        self.clean(job_id)
        self._delete_keys([o["Key"] for o in self._keys(self._job(job_id))])

    @_guarded
    def clean(self, job_id: str) -> None:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._job(job_id)
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                self.abort_upload(upload["Key"], upload["UploadId"])

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload; one already aborted (by a cleanup) is no error."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                raise

    def touch(self, job_id: str) -> None:
        # Bookkeeping for eviction: a full store must not fail the download that records its use.
        try:
            with self.available(write=True):
                self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, ACCESSED), Body=b"")
        except InsufficientStorageError as exc:
            log.warning("job %s: last use not recorded: %s", job_id, exc.message)

    @_guarded
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
        with self.available(write=True):
            self.client.put_object(Bucket=self.bucket, Key=self._report_key(request_id), Body=data)

    def get_report(self, request_id: str) -> bytes | None:
        try:
            return b"".join(self._read(self._report_key(request_id), 0, None))
        except FileNotFoundError:
            return None

    @_guarded
    def report_usage(self) -> dict[str, Usage]:
        # Last use is LastModified (when recorded): stamping each read would rewrite the object.
        base = f"{self.prefix}reports/"
        found = {}
        for o in self._keys(base):
            request_id = str(o["Key"])[len(base) :].removesuffix(".json")
            if JOB_ID.match(request_id):
                modified: datetime = o["LastModified"]
                found[request_id] = Usage(bytes=int(o["Size"]), last_used=modified.timestamp())
        return found

    @_guarded
    def delete_report(self, request_id: str) -> None:
        self._delete_keys([self._report_key(request_id)])
