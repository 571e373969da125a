"""The statistics report: per tensor expected vs measured, totals and provenance."""

from __future__ import annotations

from pydantic import Field

from initium.schemas._base import Pair, Sha256Hex, WireModel
from initium.schemas.job import FileInfo
from initium.schemas.plan import Algorithm, Role, TensorDType
from initium.schemas.schemes import SchemeParams


class PowerSums(WireModel):
    """n and s_k, the sums of (x - shift)^k for k = 1..4, over the finite values x.

    Shifted sums keep the moments exact where raw ones lose every digit: E[x^2] - E[x]^2 of a constant
    float32 [1000, 1000] tensor gave std 1e-7 (issue 15); about its own first value, every deviation of
    a constant tensor is exactly 0. Reports made before the shift have shift 0, raw power sums.
    Combine the sums of parts of one tensor (shards, slices) with `merge`, not by adding s_k: parts
    may have different shifts. `mean`, `central_moment` and `shifted` read the moments back.
    """

    n: int
    s1: float
    s2: float
    s3: float
    s4: float
    shift: float = Field(0.0, description="the s_k are sums of (x - shift)^k")

    @property
    def mean(self) -> float | None:
        """The mean of the values; None for no values."""
        return self.shift + self.s1 / self.n if self.n else None

    def shifted(self, shift: float) -> PowerSums:
        """The same values' sums about another shift, by the binomial theorem: exact algebra, and no
        cancellation when the new shift is the mean (the pairwise update of Pebay 2008, SAND2008-6212)."""
        t = self.shift - shift
        # Products, not t**k: a float power raises OverflowError where a product gives inf (values
        # near float64's limit), and a statistic must never fail a job.
        t2 = t * t
        n, s1, s2, s3, s4 = self.n, self.s1, self.s2, self.s3, self.s4
        return PowerSums(
            n=n,
            s1=s1 + n * t,
            s2=s2 + 2 * s1 * t + n * t2,
            s3=s3 + 3 * s2 * t + 3 * s1 * t2 + n * t2 * t,
            s4=s4 + 4 * s3 * t + 6 * s2 * t2 + 4 * s1 * t2 * t + n * t2 * t2,
            shift=shift,
        )

    def central_moment(self, k: int) -> float | None:
        """The mean of (x - mean)^k for k in 2..4 (population: divisor n; even k clipped at 0, which
        only rounding can cross); None for no values."""
        mean = self.mean
        if mean is None:
            return None
        about_mean = self if mean == self.shift else self.shifted(mean)
        value = (about_mean.s1, about_mean.s2, about_mean.s3, about_mean.s4)[k - 1] / self.n
        return max(value, 0.0) if k % 2 == 0 else value

    def merge(self, other: PowerSums) -> PowerSums:
        """The sums over both parts' values: how the sums of shards add up to the whole. Parts with
        one shift simply add; otherwise both are re-centred on the parts' common mean first."""
        if not other.n or not self.n:
            return self if not other.n else other
        if self.shift == other.shift:
            a, b = self, other
        else:
            mine, theirs = self.shift + self.s1 / self.n, other.shift + other.s1 / other.n
            common = mine + (theirs - mine) * other.n / (self.n + other.n)
            a, b = self.shifted(common), other.shifted(common)
        return PowerSums(n=a.n + b.n, s1=a.s1 + b.s1, s2=a.s2 + b.s2, s3=a.s3 + b.s3, s4=a.s4 + b.s4, shift=a.shift)


class FitCheck(WireModel):
    """The values against the scheme's own law, on a strided sample of at most `sample_size` values."""

    ks_statistic: float | None = Field(description="Kolmogorov-Smirnov D against the law's CDF")
    ks_pvalue: float | None = Field(
        description="P(D >= ks_statistic) for sample_size draws of the law: exact (Durbin's matrix, Marsaglia, Tsang "
        "and Wang 2003) where affordable, else Stephens' (1970) form, within 0.0015 of it there; None for laws "
        "without a CDF here"
    )
    sample_size: int
    at_bounds: int | None = Field(None, description="values equal to the law's bounds after rounding")
    unique_values: int | None = Field(None, description="distinct values in the sample (float16 and bfloat16)")


class SpectralStats(WireModel):
    """Of the [rows, prod(other dims)] matrix. A figure that cannot be given is None, and `missing`
    says why; the statistics never fail a job."""

    spectral_norm: float | None = Field(
        description="||W||_2: exact from a full SVD; else a float64 Rayleigh quotient, never above the true norm"
    )
    condition_number: float | None = Field(
        description="None when a full SVD is too large for the report or the matrix is numerically singular"
    )
    stable_rank: float | None = Field(
        description="||W||_F^2 / ||W||_2^2, within [1, min(rows, cols)]; from an estimate, never below the "
        "true value and at most (1 + bound)^2 times it"
    )
    orthogonality_error: float | None = Field(None, description="max |W W^T - g^2 I| for orthogonal schemes")
    exact: bool = Field(description="singular values from a full SVD, else the largest from Lanczos steps")
    bound: float | None = Field(
        None,
        description="relative: ||W||_2 <= spectral_norm * (1 + bound); 0 for a full SVD, else with probability "
        ">= 1 - 1e-3 over the Lanczos start vector (Kuczynski and Wozniakowski 1992)",
    )
    missing: str | None = Field(None, description="why the figures that are None are missing")


class Histogram(WireModel):
    """A tensor's values in equal bins over [low, high], next to the counts its law predicts.

    The range is the law's (its support, else mean ± 4 std), so it needs no data; `len(counts)`
    bins, the last one closed. `n` finite values were binned: the whole tensor, or an evenly strided
    sample of it. For float16 and bfloat16, `expected` is the law rounded to the dtype.
    """

    low: float
    high: float
    counts: list[int] = Field(description="values per bin")
    expected: list[float] = Field(description="the law's expected count per bin for n values")
    below: int = Field(description="values under low")
    above: int = Field(description="values over high")
    n: int = Field(description="finite values binned (counts, below and above add up to it)")


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
    rescale: float | None = Field(
        None,
        description="LSUV's factor on the drawn values (Mishkin and Matas 2016), already in expected_mean, "
        "expected_std and the checks; None: not rescaled",
    )
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
    histogram: Histogram | None = Field(None, description="kept for the job's largest weights")
    flags: list[str] = Field(
        default_factory=list,
        description="values not finite, or moments beyond sampling error of the law's: a job of correctly drawn "
        "tensors carries any such flag with probability at most 0.001",
    )


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
    grad_norm: float | None = Field(
        None,
        description="root mean square over the probe batch of each example's gradient norm at the output: "
        "what a fan_in-scaled init keeps across layers of any width (He et al. 2015); the depth warnings compare it",
    )


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


# The layers with weights the probe records, by torch class name: a plain chain's depth signal.
WEIGHTED_LAYER_TYPES = frozenset(
    {"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}
)


def depth_layers(layers: list[LayerSignal]) -> list[LayerSignal]:
    """The layers the depth signal compares (the worker's warnings and the report page alike):
    between blocks (a repeat's copies) the residual stream, since inside a residual branch a
    projection may be small on purpose (GPT-2's scaled init); plain chains compare their weighted layers."""
    blocks = [layer for layer in layers if layer.type == "block"]
    return blocks if len(blocks) >= 2 else [layer for layer in layers if layer.type in WEIGHTED_LAYER_TYPES]


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
