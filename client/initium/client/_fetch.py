"""A finished job's files as the client fetches them: where each comes from, its sha256, its layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from initium.schemas.job import JobStatus


@dataclass(frozen=True)
class Fetch:
    """One file of a finished job to download: from `url` to `target`, verified against `sha256`."""

    url: str
    target: Path
    sha256: str
    size: int
    cached: Path | None = None  # where the download cache keeps this file (the target itself without a path)


def file_url(job_id: str, name: str) -> str:
    return f"/v1/initializations/{job_id}/files/{name}"


def weights_url(job_id: str) -> str:
    return f"/v1/initializations/{job_id}/weights"


def is_sharded(status: JobStatus) -> bool:
    """Sharded output lists its shards and then the index (model.safetensors.index.json) last."""
    return bool(status.files) and status.files[-1].name.endswith(".index.json")
