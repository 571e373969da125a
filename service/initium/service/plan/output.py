"""What a plan's output holds: each tensor's bytes, the files it is written to (huggingface_hub's
sharding), the size of each file's safetensors header, which the planner holds under the limit
every safetensors reader enforces, and the plan's own JSON, in pieces."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from initium.schemas import plan as wire
from initium.schemas.dtypes import dtype_info
from initium.schemas.request import OutputOptions
from initium.service.errors import LimitExceededError
from initium.service.identity import ALGORITHM

SINGLE_FILE = "weights.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# The safetensors crate (safetensors/src/tensor.rs, MAX_HEADER_SIZE), which the Python package and
# the Hugging Face loaders call, refuses to open a file whose header length N (the JSON, padding
# included, without the 8-byte length prefix) exceeds this: "HeaderTooLarge".
SAFETENSORS_MAX_HEADER_BYTES = 100_000_000


def tensor_nbytes(t: wire.PlannedTensor) -> int:
    """Bytes of the tensor as written: its (sliced) output shape in its dtype."""
    return math.prod(t.output_shape()) * dtype_info(t.dtype).itemsize


def shard_files(tensors: list[wire.PlannedTensor], output: str, max_bytes: int) -> list[wire.Shard]:
    """huggingface_hub's rule: greedy in state_dict order, a tensor bigger than the limit alone in
    its own shard; files model-0000k-of-0000N.safetensors (or model.safetensors when one)."""
    groups = _groups([tensor_nbytes(t) for t in tensors], output, max_bytes)
    if output == "single":
        names = [SINGLE_FILE]
    elif len(groups) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    return [
        wire.Shard(file=name, tensors=[tensors[i].name for i in group],
                   bytes=sum(tensor_nbytes(tensors[i]) for i in group))
        for name, group in zip(names, groups, strict=True)
    ]  # fmt: skip


def _groups(sizes: Sequence[int], output: str, max_bytes: int) -> list[list[int]]:
    """The indices of the tensors each file holds, by the rule shard_files states."""
    groups: list[list[int]] = [] if sizes else [[]]
    size = 0
    for i, nbytes in enumerate(sizes):
        if not groups or (output == "sharded" and size + nbytes > max_bytes and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += nbytes
    return groups


def provenance_metadata(request_id: str, seed: int) -> dict[str, str]:
    """The `__metadata__` every written file carries (write.index.metadata_for returns this; the
    planner needs it to size headers and may not import the writer)."""
    # safetensors metadata is str -> str only (huggingface/safetensors#278); transformers requires
    # format=pt to load the file.
    return {
        "format": "pt",
        "initium.request_id": request_id,
        "initium.seed": str(seed),
        "initium.algorithm": ALGORITHM.id,
        "initium.algorithm_version": str(ALGORITHM.version),
    }


class HeaderSizer:
    """The exact header length N (bytes, padding included, prefix excluded) of a safetensors file
    that write.safetensors.build_header writes for some of `tensors`, in order, with `metadata`.

    build_header writes json.dumps({"__metadata__": metadata, name: {"dtype", "shape",
    "data_offsets"}, ...}, separators=(",", ":")) padded with spaces to a multiple of 8. Every part
    but the data offsets is fixed per tensor, so it is measured once; the offsets' digits depend on
    the tensor's place in its file and are counted per file.
    """

    def __init__(self, tensors: Sequence[wire.PlannedTensor], metadata: Mapping[str, str]) -> None:
        self.nbytes = [tensor_nbytes(t) for t in tensors]
        # '"name":{"dtype":"F32","shape":[2,3],"data_offsets":[' and '"]}' plus the comma before
        # the entry: json.dumps escapes the name exactly as the writer's json.dumps does.
        self.fixed = [
            len(json.dumps(t.name)) + len(json.dumps(dtype_info(t.dtype).safetensors))
            + len(json.dumps(t.output_shape(), separators=(",", ":")))
            + len(':{"dtype":,"shape":,"data_offsets":[,]}') + 1
            for t in tensors
        ]  # fmt: skip
        self.opening = len('{"__metadata__":') + len(json.dumps(dict(metadata), separators=(",", ":"))) + 1

    def size(self, indices: Sequence[int]) -> int:
        """N for the file holding the tensors at `indices`, in this order."""
        length, offset = self.opening, 0
        for i in indices:
            end = offset + self.nbytes[i]
            length += self.fixed[i] + len(str(offset)) + len(str(end))
            offset = end
        return length + (-length % 8)

    def shard_sizes(self, output: str, max_bytes: int) -> list[int]:
        """N of every file shard_files makes of all the tensors with these output options."""
        return [self.size(group) for group in _groups(self.nbytes, output, max_bytes)]


def check_headers(
    tensors: Sequence[wire.PlannedTensor],
    shards: Sequence[wire.Shard],
    output: OutputOptions,
    metadata: Mapping[str, str],
    tick: Callable[[], None],
) -> None:
    """Refuse (413) a plan any of whose files would have a safetensors header past
    SAFETENSORS_MAX_HEADER_BYTES: every reader would refuse the file (issue 16: a job "succeeded"
    with a 151 MB header). The message names the file, its header size, the limit and a fix that
    works: the largest max_shard_bytes whose shards all pass, when there is one. `tick` is called
    between steps of that search (the planner's deadline check, which raises to stop it)."""
    sizer = HeaderSizer(tensors, metadata)
    sizes = sizer.shard_sizes(output.format, output.max_shard_bytes)
    worst = max(range(len(sizes)), key=sizes.__getitem__)
    if sizes[worst] <= SAFETENSORS_MAX_HEADER_BYTES:
        return
    names = sum(len(t.name) for t in tensors)
    shard = _largest_passing_shards(sizer, tick)
    more = (
        f'write it sharded with smaller files (output {{"format": "sharded", "max_shard_bytes": {shard}}} passes), or '
        if shard is not None
        else ""
    )
    raise LimitExceededError(
        f"{shards[worst].file} would have a {sizes[worst]:,}-byte safetensors header; safetensors refuses "
        f"to open a file whose header passes {SAFETENSORS_MAX_HEADER_BYTES:,} bytes. To fix it, {more}give "
        f"the modules shorter names (the {len(tensors):,} tensor names total {names:,} bytes)",
        ("output",),
    )


def _largest_passing_shards(sizer: HeaderSizer, tick: Callable[[], None]) -> int | None:
    """The largest max_shard_bytes whose every shard's header passes, by bisection (a shard's header
    shrinks as its byte budget does; each candidate is checked, so the answer always passes), or
    None when even one tensor per shard does not."""

    def passes(max_bytes: int) -> bool:
        tick()
        return max(sizer.shard_sizes("sharded", max_bytes)) <= SAFETENSORS_MAX_HEADER_BYTES

    low, high = 1, max(sum(sizer.nbytes), 1)
    if not passes(low):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if passes(middle) else (low, middle)
    return low


# The Plan fields that grow with the spec (its lists), each streamed in batches of _BATCH items.
_LISTS: dict[str, TypeAdapter[list[Any]]] = {
    name: TypeAdapter(info.annotation)
    for name, info in wire.Plan.model_fields.items()
    if getattr(info.annotation, "__origin__", None) is list
}
_BATCH = 512


def plan_json_chunks(plan: wire.Plan) -> Iterator[bytes]:
    """plan.model_dump_json(), byte for byte, in pieces: the plan with its lists emptied, each list's
    items serialized a batch at a time where its `"name":[]` stands (only a field can write that
    text: inside a JSON string its quotes would be escaped)."""
    rest = plan.model_copy(update={name: [] for name in _LISTS}).model_dump_json().encode()
    for name, adapter in _LISTS.items():
        marker = f'"{name}":['.encode()
        before, rest = rest.split(marker + b"]", 1)
        yield before + marker
        items: list[Any] = getattr(plan, name)
        for start in range(0, len(items), _BATCH):
            batch = adapter.dump_json(items[start : start + _BATCH])[1:-1]
            yield (b"," if start else b"") + batch
        rest = b"]" + rest
    yield rest


def release_plan(plan: wire.Plan, batch: int = 512) -> None:
    """Empty the plan's lists a batch at a time. Freeing a list of 100,000 tensors in one go runs in
    C without releasing the GIL (0.8 s measured on the 2-core test machine, the API's event loop and
    /healthz waiting on it); a batch at a time, other threads run between batches."""
    for name in _LISTS:
        items: list[Any] = getattr(plan, name)
        while items:
            del items[-batch:]
