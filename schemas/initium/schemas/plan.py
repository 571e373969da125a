"""The resolved plan: every tensor, its context, the rule that fired and what it should look like."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from initium.schemas._base import Pair, WireModel
from initium.schemas.schemes import SchemeParams

Role = Literal["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
TensorDType = Literal["float32", "float16", "bfloat16", "float64", "int64"]


class Algorithm(WireModel):
    """The generator that turns (seed, tensor name, params) into values; a new version means new bytes."""

    id: str
    version: int


class Distribution(WireModel):
    """The law a tensor is drawn from, in the sampler's own terms."""

    family: Literal[
        "constant", "uniform", "normal", "truncated_normal", "orthogonal",
        "eye", "dirac", "delta_orthogonal", "sparse", "looks_linear",
    ]  # fmt: skip
    params: dict[str, float]


class PlannedPart(WireModel):
    """Indices [start, stop) along `axis` of a packed tensor, initialized as their own matrix (a gate,
    or q, k or v); its values come from their own Philox stream, keyed by `name[start:stop]` for
    axis 0 and `name[:, start:stop]` for axis 1 (one `:, ` per axis before it)."""

    rows: Pair = Field(description="[start, stop) along `axis` (rows when axis is 0)")
    axis: int = Field(
        0,
        description="the dimension the part spans a range of: 0 for gates and nn.Linear's "
        "fused outputs, 1 for GPT-2's Conv1D [in, out] c_attn",
    )
    roles: list[str]
    fan_in: int
    fan_out: int
    rule: str | None
    init: SchemeParams | None
    reason: str | None = None
    distribution: Distribution | None
    expected_mean: float | None
    expected_std: float | None
    elementwise: bool


class PlannedTensor(WireModel):
    """One tensor of the state_dict, as the worker will generate it."""

    name: str
    shape: list[int]
    dtype: TensorDType
    module: str = Field(description="dotted path of the owning module ('' for the root)")
    module_type: str
    role: Role
    roles: list[str] = Field(default_factory=list, description="every role a rule can match on this tensor")
    residual: str | None = Field(None, description="the residual module whose branch holds this tensor")
    depth: int | None = Field(None, description="the copy index in the innermost repeat")
    fan_in: int
    fan_out: int
    followed_by: str | None = Field(
        description="the activation that follows the owning module, or None when a layer or the end comes first"
    )
    rule: str | None = Field(
        description="the rule that fired, e.g. 'policy.rules[1]' or 'preset:xavier@1[0]'; None for buffers"
    )
    init: SchemeParams | None = Field(description="the scheme with every parameter resolved")
    reason: str | None = Field(None, description="why `auto` chose this scheme")
    distribution: Distribution | None
    expected_mean: float | None
    expected_std: float | None
    elementwise: bool = Field(description="each element drawn independently (any slice can be generated alone)")
    post: list[str] = Field(default_factory=list, description="fix-ups after sampling, e.g. 'zero_row:0'")
    parts: list[PlannedPart] | None = Field(
        None, description="per-gate or per-projection blocks, each with its own rule; None when the tensor is one block"
    )
    slice: list[Pair] | None = Field(
        None, description="the [start, stop) ranges returned of the full `shape`; None for the whole tensor"
    )

    def output_shape(self) -> list[int]:
        """The shape written to the file: the slice's when one was asked for."""
        return self.shape if self.slice is None else [stop - start for start, stop in self.slice]


class Shard(WireModel):
    """One output file and the tensors it holds, in order."""

    file: str
    tensors: list[str]
    bytes: int


class PlanTotals(WireModel):
    tensors: int
    parameters: int
    bytes: int


class Plan(WireModel):
    """The dry run of an initialization request: nothing generated."""

    request_id: str
    algorithm: Algorithm
    tensors: list[PlannedTensor]
    totals: PlanTotals
    preset: str | None = Field(description="the preset the policy named, pinned to its version")
    shards: list[Shard] = Field(default_factory=list, description="the output files and what each holds")
    unused_rules: list[str] = Field(description="rules that matched no tensor")
    uncovered: list[str] = Field(description="parameters no rule matched")
    warnings: list[str]
