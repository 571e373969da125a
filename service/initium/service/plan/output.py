"""What a plan's output holds: each tensor's bytes and the files it is written to (huggingface_hub's sharding)."""

from __future__ import annotations

import math

from initium.schemas import plan as wire
from initium.schemas.dtypes import dtype_info

SINGLE_FILE = "weights.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def tensor_nbytes(t: wire.PlannedTensor) -> int:
    """Bytes of the tensor as written: its (sliced) output shape in its dtype."""
    return math.prod(t.output_shape()) * dtype_info(t.dtype).itemsize


def shard_files(tensors: list[wire.PlannedTensor], output: str, max_bytes: int) -> list[wire.Shard]:
    """huggingface_hub's rule: greedy in state_dict order, a tensor bigger than the limit alone in
    its own shard; files model-0000k-of-0000N.safetensors (or model.safetensors when one)."""
    groups: list[list[wire.PlannedTensor]] = [] if tensors else [[]]
    size = 0
    for t in tensors:
        nbytes = tensor_nbytes(t)
        if not groups or (output == "sharded" and size + nbytes > max_bytes and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += nbytes
    if output == "single":
        names = [SINGLE_FILE]
    elif len(groups) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    return [
        wire.Shard(file=name, tensors=[t.name for t in group],
                   bytes=sum(tensor_nbytes(t) for t in group))
        for name, group in zip(names, groups, strict=True)
    ]  # fmt: skip
