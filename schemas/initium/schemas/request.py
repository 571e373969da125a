"""The initialization request: spec, policy, seed and dtype."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Strict, Tag

from initium.schemas._base import WireModel
from initium.schemas.policy import Policy
from initium.schemas.spec import Manifest, Spec

DType = Literal["float32", "float16", "bfloat16", "float64"]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
# [start, stop) along one dimension, as Python slices and torch.narrow count.
Range = Annotated[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=1)]], Strict(False)]  # see _base.Pair


def _spec_form(value: Any) -> str:
    # A manifest lists tensors, a tree lists modules: the key says which, so errors name one form.
    if isinstance(value, dict):
        return "manifest" if "tensors" in value else "tree"
    return "manifest" if isinstance(value, Manifest) else "tree"


AnySpec = Annotated[Annotated[Spec, Tag("tree")] | Annotated[Manifest, Tag("manifest")], Discriminator(_spec_form)]


class ReportOptions(WireModel):
    """What the report probes besides each tensor (none of it changes the weights)."""

    propagation: Literal["auto", "on", "off"] = Field(
        "auto", description="run a probe batch through the network (tree specs); auto: up to 200M parameters"
    )
    probe_shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=6, description="one probe sample's shape, without the batch (default: from the first layer)"
    )
    probe_batch: Annotated[int, Field(ge=2, le=4096)] = 64
    warn_factor: Annotated[float, Field(gt=1)] = Field(
        10.0, description="warn when the signal's scale grows or shrinks by more than this across depth"
    )


class OutputOptions(WireModel):
    """The file layout: one safetensors file, or Hugging Face-convention shards with an index."""

    format: Literal["single", "sharded"] = "single"
    max_shard_bytes: Annotated[int, Field(ge=1)] = Field(
        5_000_000_000, description="per shard, decimal bytes as huggingface_hub counts them (default 5 GB)"
    )


class InitRequest(WireModel):
    """Everything that determines the bytes of an initialization."""

    spec: AnySpec
    policy: Policy
    seed: Seed = 0
    dtype: DType = "float32"
    report: ReportOptions = Field(default_factory=ReportOptions)
    output: OutputOptions = Field(default_factory=OutputOptions)
    slices: dict[str, list[Range]] = Field(
        default_factory=dict,
        max_length=100_000,
        description=(
            "tensor name -> one [start, stop) range per dimension; that tensor is returned as exactly "
            "this part of the full tensor (e.g. one tensor-parallel rank's rows)"
        ),
    )
