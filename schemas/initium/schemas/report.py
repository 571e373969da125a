"""The statistics report: per tensor expected vs measured, totals and provenance."""

from __future__ import annotations

from pydantic import Field

from initium.schemas._base import Pair, Sha256Hex, WireModel
from initium.schemas.job import FileInfo
from initium.schemas.plan import Algorithm, Role, TensorDType
from initium.schemas.schemes import SchemeParams


class PowerSums(WireModel):
    """n and the sums of x, x^2, x^3, x^4 over finite values: add them across shards for exact totals."""

    n: int
    s1: float
    s2: float
    s3: float
    s4: float


class FitCheck(WireModel):
    """The values against the scheme's own law, on a strided sample of at most `sample_size` values."""

    ks_statistic: float | None = Field(description="Kolmogorov-Smirnov D against the law's CDF")
    ks_pvalue: float | None = Field(description="asymptotic (Stephens 1970); None for laws without a CDF here")
    sample_size: int
    at_bounds: int | None = Field(None, description="values equal to the law's bounds after rounding")
    unique_values: int | None = Field(None, description="distinct values in the sample (float16 and bfloat16)")


class SpectralStats(WireModel):
    """Of the [rows, prod(other dims)] matrix."""

    spectral_norm: float
    condition_number: float | None = Field(description="None when a full SVD is too large for the report")
    stable_rank: float = Field(description="||W||_F^2 / ||W||_2^2")
    orthogonality_error: float | None = Field(None, description="max |W W^T - g^2 I| for orthogonal schemes")
    exact: bool = Field(
        description="singular values from a full SVD, else the largest from 24 Lanczos steps (within 0.4%)"
    )


class TensorStats(WireModel):
    """What one generated tensor holds, next to what its scheme promised."""

    name: str
    shape: list[int] = Field(description="the full tensor's shape")
    slice: list[Pair] | None = Field(None, description="the part measured and written, if not all")
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
    frobenius_norm: float | None = None
    power_sums: PowerSums | None = None
    fit: FitCheck | None = None
    spectral: SpectralStats | None = None
    flags: list[str] = Field(default_factory=list, description="where measured and expected disagree")


class LayerSignal(WireModel):
    """A probe batch at one layer's output: forward statistics and the gradient coming back."""

    name: str
    type: str
    mean: float
    std: float
    channel_sq_mean: float = Field(description="mean over channels of the squared channel mean (Brock et al. 2021)")
    channel_var: float = Field(description="mean over channels of the channel variance")
    dead_fraction: float | None = Field(None, description="ReLU outputs: channels that are 0 for every sample")
    saturated_fraction: float | None = Field(None, description="tanh, sigmoid outputs: values within 1% of a bound")
    grad_std: float | None = None


class Propagation(WireModel):
    """Signal propagation: a seeded probe batch forward, block by block, and a loss's gradient back."""

    probe_shape: list[int]
    probe_batch: int = 0
    loss: float | None = None
    loss_name: str | None = None
    loss_at_chance: float | None = Field(
        None, description="log(C) for a C-class head: the loss a fresh model should show"
    )
    layers: list[LayerSignal] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    skipped: str | None = Field(None, description="why the probe did not run")


class LsuvLayer(WireModel):
    """One layer LSUV rescaled: its output std on the probe before and after, and the factor applied."""

    name: str
    std_before: float
    std_after: float
    iterations: int
    scale: float
    converged: bool


class ReportTotals(WireModel):
    tensors: int
    parameters: int
    bytes: int
    nan_count: int
    inf_count: int


class ArtifactInfo(WireModel):
    """The main file (the weights, or the shard index when sharded) and every file written."""

    sha256: Sha256Hex
    size: int
    format: str = "safetensors"
    files: list[FileInfo] = Field(default_factory=list)


class StageTimings(WireModel):
    """Seconds spent per stage; materialize, summarize and write interleave tensor by tensor."""

    plan: float
    lsuv: float = 0.0
    materialize: float
    summarize: float
    write: float
    propagate: float = 0.0
    total: float


class Provenance(WireModel):
    request_id: Sha256Hex
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
    propagation: Propagation | None = None
    lsuv: list[LsuvLayer] | None = None
    warnings: list[str] = Field(
        default_factory=list, description="the plan's, the flags' and the probe's, first to read"
    )


class RecordedReport(WireModel):
    """A report kept by the service for the record (POST /v1/reports), e.g. one made in local mode."""

    id: str = Field(description="the report's request id: the sha256 of the request that produced it")
    sha256: str = Field(description="of the artifact the report describes")
    recorded_at: str
    location: str
