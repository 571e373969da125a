"""Service settings, read from INITIUM_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INITIUM_", extra="ignore")

    data_dir: Path = Field(Path(".initium-data"), description="job store and artifacts")
    embedded_worker: bool = Field(True, description="start and supervise a worker process with the API")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$", description="worker device")
    poll_interval: Annotated[float, Field(gt=0, le=5)] = 0.05
    max_parameters: Annotated[int, Field(gt=0)] = 20_000_000_000
    max_tensors: Annotated[int, Field(gt=0)] = 1_000_000
    worker_stale_after: Annotated[float, Field(gt=0)] = 10.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
