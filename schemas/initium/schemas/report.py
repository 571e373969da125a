"""The statistics report: per tensor expected vs measured, totals and provenance."""

from __future__ import annotations

from pydantic import Field

from initium.schemas._base import WireModel
from initium.schemas.plan import Algorithm, Role, TensorDType
from initium.schemas.schemes import SchemeParams


class TensorStats(WireModel):
    """What one generated tensor holds, next to what its scheme promised."""

    name: str
    shape: list[int] = Field(description="the full tensor's shape")
    slice: list[tuple[int, int]] | None = Field(None, description="the part measured and written, if not all")
    dtype: TensorDType
    role: Role
    scheme: str
    params: SchemeParams | None
    rule: str | None
    fan_in: int
    fan_out: int
    expected_mean: float | None
    expected_std: float | None
    mean: float | None
    std: float | None = Field(description="population standard deviation (divisor n)")
    min: float | None
    max: float | None
    abs_max: float | None
    zero_fraction: float
    nan_count: int
    inf_count: int


class ReportTotals(WireModel):
    tensors: int
    parameters: int
    bytes: int
    nan_count: int
    inf_count: int


class ArtifactInfo(WireModel):
    sha256: str
    size: int
    format: str = "safetensors"


class StageTimings(WireModel):
    """Seconds spent per stage; materialize, summarize and write interleave tensor by tensor."""

    plan: float
    materialize: float
    summarize: float
    write: float
    total: float


class Provenance(WireModel):
    request_id: str
    seed: int
    dtype: str
    algorithm: Algorithm
    device: str
    versions: dict[str, str]
    timings: StageTimings
    created_at: str


class Report(WireModel):
    tensors: list[TensorStats]
    totals: ReportTotals
    artifact: ArtifactInfo
    provenance: Provenance
