"""The shard index (model.safetensors.index.json) and the metadata every written file carries."""

from __future__ import annotations

import json

from initium.schemas.plan import Plan
from initium.schemas.request import InitRequest
from initium.service.plan.output import provenance_metadata


def index_bytes(plan: Plan) -> bytes:
    """model.safetensors.index.json as huggingface_hub writes it: total_size and the weight map."""
    index = {
        "metadata": {"total_size": sum(shard.bytes for shard in plan.shards)},
        "weight_map": {name: shard.file for shard in plan.shards for name in shard.tensors},
    }
    return (json.dumps(index, indent=2) + "\n").encode()


def metadata_for(plan: Plan, request: InitRequest) -> dict[str, str]:
    """The `__metadata__` of every file the job writes: the planner's own, so the header it sized
    (plan.output.HeaderSizer) is the header written."""
    return provenance_metadata(plan.request_id, request.seed)
