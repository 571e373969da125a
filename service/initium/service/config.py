"""Service settings, read from INITIUM_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from initium.service.plan.limits import Limits
from initium.service.write.artifacts import Artifacts, open_artifacts


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INITIUM_", extra="ignore")

    data_dir: Path = Field(Path(".initium-data"), description="job store and artifacts")
    embedded_worker: bool = Field(True, description="start and supervise a worker process with the API")
    broker_url: str | None = Field(
        None, description="Celery broker (redis://host:6379/0): jobs go to `initium worker` processes; "
        "the embedded worker is off",
    )  # fmt: skip
    # Redis redelivers a message not acknowledged within this time, even while its job still runs,
    # so it must exceed the longest job.
    visibility_timeout_s: Annotated[float, Field(gt=0)] = 6 * 3600.0
    part_bytes: Annotated[int, Field(gt=0)] = Field(
        2_000_000_000, description="Celery: a single-file job larger than this runs as parts on several workers "
        "(a sharded one runs one part per shard)",
    )  # fmt: skip
    artifact_store: str = Field(
        "local", pattern=r"^(local|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$",
        description="where artifacts live: 'local' (under data_dir) or 's3://bucket/prefix' (S3 or MinIO; "
        "region and credentials from the standard AWS_* variables)",
    )  # fmt: skip
    s3_endpoint_url: str | None = Field(None, description="an S3-compatible server (MinIO: http://minio:9000)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="worker device")
    # About 1 GB: at or above it, a job holds a GPU for seconds (writes run at ~1.7 GB/s) and the CPU
    # for minutes, so it is worth a lane of its own; below it lie the everyday models (GPT-2 small
    # in float32 is 0.5 GB), which the CPU lane still finishes while a user waits for them.
    large_job_bytes: Annotated[int, Field(gt=0)] = Field(
        1_000_000_000, description="INITIUM_LARGE_JOB_BYTES: a job whose plan writes at least this many bytes runs "
        "in the large lane (embedded) or on the initium.large queue (Celery), so smaller jobs never wait behind it",
    )  # fmt: skip
    large_job_tensors: Annotated[int, Field(gt=0)] = Field(
        1_000, description="INITIUM_LARGE_JOB_TENSORS: a job of at least this many tensors runs in the large-job "
        "lane too, whatever its bytes: each tensor's statistics and report entry cost 3-10 ms (measured: 1,000 "
        "one-element tensors, 3.4 s on an idle 2-core host), so 100,000 tiny tensors are minutes of work (set it the "
        "same on the API and every worker)",
    )  # fmt: skip
    small_lane_device: str = Field(
        "cpu", pattern=r"^(off|auto|cpu|cuda(:[0-9]+)?)$", description="INITIUM_SMALL_LANE_DEVICE: embedded: the "
        "device of the second worker, which runs small jobs only; off: one worker runs every job in turn",
    )  # fmt: skip
    worker_grace_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="INITIUM_WORKER_GRACE_S: embedded: how long a worker stopped by the API's shutdown may "
        "finish its running job before it is killed; the job then stays queued and resumes (an API killed "
        "outright takes its workers with it within a second: pipeline.lifecycle)",
    )  # fmt: skip
    poll_interval: Annotated[float, Field(gt=0, le=5)] = 0.05
    max_parameters: Annotated[int, Field(gt=0)] = 20_000_000_000
    max_tensors: Annotated[int, Field(gt=0)] = Field(
        100_000, description="INITIUM_MAX_TENSORS: the most tensors one request plans into, counted from the spec "
        "before planning (413 beyond)",
    )  # fmt: skip
    max_name_bytes: Annotated[int, Field(gt=0)] = Field(
        32 * 1024 * 1024, description="INITIUM_MAX_NAME_BYTES: the most bytes one request's tensor names total, "
        "counted from the spec before planning (413 beyond): it bounds planning's memory and the headers",
    )  # fmt: skip
    max_plan_seconds: Annotated[float, Field(gt=0)] = Field(
        30.0, description="INITIUM_MAX_PLAN_SECONDS: the longest one request may take to plan (413 beyond)"
    )
    max_plan_inline_bytes: Annotated[int, Field(gt=0)] = Field(
        8 * 1024 * 1024, description="INITIUM_MAX_PLAN_INLINE_BYTES: a POST /v1/plans answer larger than this is "
        "streamed as a download (Content-Disposition: attachment) instead of sent whole",
    )  # fmt: skip
    # Planning is pure Python under the GIL: plans at once share one core's worth of CPU, so more of
    # them finish no sooner, they only multiply memory (a 100,000-tensor plan holds about 0.35-0.55
    # GB while planned) and stall the event loop. Two let a small plan through beside a large one.
    max_concurrent_plans: Annotated[int, Field(gt=0)] = Field(
        2, description="INITIUM_MAX_CONCURRENT_PLANS: the most requests the API plans at once (POST /v1/plans "
        "and POST /v1/initializations together); one that finds no free slot within a few seconds gets 503 "
        "with Retry-After",
    )  # fmt: skip
    worker_stale_after: Annotated[float, Field(gt=0)] = 10.0
    republish_after_s: Annotated[float, Field(gt=0)] = Field(
        600.0, description="INITIUM_REPUBLISH_AFTER_S: a job queued this long without a first attempt is "
        "published again when its request is resubmitted (its message may be lost); at most once per period",
    )  # fmt: skip
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    max_live_streams: Annotated[int, Field(ge=0)] = Field(
        64,
        description="INITIUM_MAX_LIVE_STREAMS: live weights downloads (GET .../weights?live=1) followed at once; "
        "past it a live request gets the ordinary answer (409 not_ready while the job runs), and the client waits for "
        "the job and downloads the finished file; 0 turns live downloads off",
    )
    live_idle_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="INITIUM_LIVE_IDLE_S: a live weights download (GET .../weights?live=1) that received no "
        "new byte for this long while its job was not running (still queued, or queued again after its worker "
        "died) ends short; the client then waits for the job and resumes from the finished file",
    )  # fmt: skip
    # What one `initium serve` process holds open (uvicorn's own bounds; issue 16). uvicorn has no
    # header or body read timeout: deploy/nginx.conf in front gives those (README, deployment).
    max_connections: Annotated[int, Field(gt=0)] = Field(
        512, description="INITIUM_MAX_CONNECTIONS: `initium serve` answers 503 to a request while this many "
        "connections or requests are open (uvicorn's limit_concurrency); each stalled download holds about "
        "1.5 MB, so this also bounds their memory",
    )  # fmt: skip
    keep_alive_s: Annotated[int, Field(gt=0)] = Field(
        5, description="INITIUM_KEEP_ALIVE_S: `initium serve` closes a connection idle this long between requests "
        "(uvicorn's timeout_keep_alive)",
    )  # fmt: skip
    max_header_bytes: Annotated[int, Field(ge=1024)] = Field(
        16 * 1024, description="INITIUM_MAX_HEADER_BYTES: `initium serve` refuses a request whose line and headers "
        "take more bytes than this and closes the connection: 400 while the head arrives (h11's "
        "max_incomplete_event_size), 431 when it arrived whole (api.connections.HeaderLimit, any server)",
    )  # fmt: skip
    backlog: Annotated[int, Field(gt=0)] = Field(
        2048, description="INITIUM_BACKLOG: connections the kernel queues for `initium serve` before it accepts "
        "them (listen backlog; the kernel caps it at net.core.somaxconn)",
    )  # fmt: skip
    store_max_bytes: Annotated[int, Field(gt=0)] | None = Field(None, description="evict finished jobs beyond this")
    store_max_age_s: Annotated[float, Field(gt=0)] | None = Field(None, description="evict jobs unused this long")
    evict_interval_s: Annotated[float, Field(gt=0)] = 60.0
    # [Note: free space for readiness] Below this many free bytes the data volume reports "full"
    # and /readyz is not ready, so a balancer stops sending work before writes fail. A submission
    # stores its request and plan (about 490 bytes of plan.json per tensor, measured: 9.7 MB for
    # 20,000 tensors), so 64 MiB holds one more submission of 100,000 tensors (49 MB) beside records
    # and presets. It promises nothing for a job's weights: the worker that cannot write them fails
    # the job with the reason.
    min_free_bytes: Annotated[int, Field(ge=0)] = Field(
        64 << 20, description="INITIUM_MIN_FREE_BYTES: below this many free bytes on the data volume /readyz "
        "reports the store full and not ready (0: never)",
    )  # fmt: skip
    max_depth: Annotated[int, Field(gt=0)] = 64
    max_modules: Annotated[int, Field(gt=0)] = 200_000
    max_preset_rules: Annotated[int, Field(gt=0)] = Field(
        1_000, description="INITIUM_MAX_PRESET_RULES: the most rules one published preset holds (413 beyond)"
    )
    max_presets_bytes: Annotated[int, Field(gt=0)] = Field(
        64 * 1024 * 1024, description="INITIUM_MAX_PRESETS_BYTES: the most bytes all published presets take "
        "together (a publish past it is a 413): planning and GET /v1/presets read every one",
    )  # fmt: skip
    api_key_hashes: str = Field(
        "",
        description="comma-separated sha256 hex digests of the accepted API keys; empty: no auth ('initium api-key')",
    )
    public_docs: bool = Field(
        False, description="INITIUM_PUBLIC_DOCS: with API keys configured, serve /docs, /redoc and /openapi.json "
        "without a key (default: they need one, as /v1 does); without keys they are always open",
    )  # fmt: skip

    def limits(self) -> Limits:
        """What one request may ask for: the planner's view of these settings."""
        return Limits(
            self.max_parameters, self.max_tensors, max_depth=self.max_depth, max_modules=self.max_modules,
            max_name_bytes=self.max_name_bytes, max_plan_seconds=self.max_plan_seconds,
        )  # fmt: skip

    def artifacts(self, serving: bool = False) -> Artifacts:
        """The artifact store these settings name (an S3 bucket is created if missing); `serving`:
        the API's client, which answers within seconds when the store is down (see write.s3)."""
        return open_artifacts(self.artifact_store, self.data_dir, self.s3_endpoint_url, serving=serving)

    def key_hashes(self) -> list[str]:
        return [h.strip().lower() for h in self.api_key_hashes.split(",") if h.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
