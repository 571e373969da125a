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
    poll_interval: Annotated[float, Field(gt=0, le=5)] = 0.05
    max_parameters: Annotated[int, Field(gt=0)] = 20_000_000_000
    max_tensors: Annotated[int, Field(gt=0)] = 1_000_000
    worker_stale_after: Annotated[float, Field(gt=0)] = 10.0
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    store_max_bytes: Annotated[int, Field(gt=0)] | None = Field(None, description="evict finished jobs beyond this")
    store_max_age_s: Annotated[float, Field(gt=0)] | None = Field(None, description="evict jobs unused this long")
    evict_interval_s: Annotated[float, Field(gt=0)] = 60.0
    max_depth: Annotated[int, Field(gt=0)] = 64
    max_modules: Annotated[int, Field(gt=0)] = 200_000
    api_key_hashes: str = Field(
        "",
        description="comma-separated sha256 hex digests of the accepted API keys; empty: no auth ('initium api-key')",
    )

    def limits(self) -> Limits:
        """What one request may ask for: the planner's view of these settings."""
        return Limits(self.max_parameters, self.max_tensors, max_depth=self.max_depth, max_modules=self.max_modules)

    def artifacts(self, serving: bool = False) -> Artifacts:
        """The artifact store these settings name (an S3 bucket is created if missing); `serving`:
        the API's client, which answers within seconds when the store is down (see write.s3)."""
        return open_artifacts(self.artifact_store, self.data_dir, self.s3_endpoint_url, serving=serving)

    def key_hashes(self) -> list[str]:
        return [h.strip().lower() for h in self.api_key_hashes.split(",") if h.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
