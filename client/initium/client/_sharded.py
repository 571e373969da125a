"""Sharded in-place init: each rank fills only its own shard of every DTensor (issue 17, item 3).

When a module's parameters are DTensors (FSDP2 `fully_shard`, tensor parallel `ColwiseParallel` /
`RowwiseParallel`, or both on a 2-D mesh), `initialize_` lands here. Every value is the service's
for the same request: counter-based Philox makes an element depend only on (seed, tensor name,
global element index, law, dtype), so a rank draws exactly the global indices it holds, as boxes of
the full tensor (`PlannedTensor.slice`), and writes them into the DTensor's local storage in place.

Which global indices a rank holds is DTensor's own answer, read from its placements the way
torch.distributed.tensor._utils.compute_local_shape_and_global_offset reads them (torch.chunk's
uneven splits, and `_StridedShard`'s strided rows on a 2-D FSDP x TP mesh), and checked against
the local tensor's shape before anything is written. Laws whose entries depend on the whole tensor
(`elementwise == False`: the orthogonal family) are drawn whole by every rank that holds a piece,
and cut. No collective is called: each rank computes alone, so init costs no communication.
See docs/sharded-init.md.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from initium.schemas.plan import PlannedTensor
    from initium.schemas.request import InitRequest
    from initium.service.pipeline.local import LocalService

# Elements drawn per materialize call: a rank's peak is its shards plus one such chunk (and its
# float64 scratch when an LSUV factor applies), whatever the tensor's size.
CHUNK = 1 << 20

Box = list[tuple[int, int]]  # per dimension, [start, stop) of the global tensor
# (planned tensor, seed, device, LSUV scale) -> its values, or its `slice`'s: LocalService.draw
Draw = Callable[["PlannedTensor", int, "torch.device", float], "torch.Tensor"]


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether any parameter or buffer of `module` is a DTensor."""
    # No DTensor exists unless torch.distributed.tensor was imported, and importing it costs
    # single-process init a noticeable part of its budget (issue 17, item 2): look, do not import.
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    if dtensor is None:
        return False
    return any(isinstance(t, dtensor) for t in (*module.parameters(), *module.buffers()))


def initialize_sharded_(
    module: torch.nn.Module, request: InitRequest, service: LocalService, device: torch.device | None
) -> torch.nn.Module:
    """Fill every tensor of `module` (some of them DTensors) with `request`'s values, each rank its
    local shard only; a module on the meta device is first materialized on `device` (to_empty;
    default: its DeviceMesh's device type, the current cuda device on a cuda mesh).

    The plan (and its refusals: RequestInvalidError for an uncovered parameter or for policy.lsuv,
    which needs a forward pass a module-derived manifest does not have) comes before anything is
    allocated. Raises ValueError for a Partial placement (a pending reduction has no values to
    fill: initialize before the forward pass that makes one).
    """
    plan, scales = service.plan_and_scales(request)
    named = named_tensors(module)
    _refuse_partial(named)
    named = _materialize_meta(module, device or _mesh_device(named))
    for planned in plan.tensors:
        fill_local_(named[planned.name], planned, request.seed, scales.get(planned.name, 1.0), service.draw)
    return module


def named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by state_dict name, tied names included (they share one object)."""
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    return {name: tensor for name, tensor in named if tensor is not None}


def fill_local_(target: torch.Tensor, planned: PlannedTensor, seed: int, scale: float, draw: Draw) -> None:
    """Write `planned`'s values at the global indices `target` holds into its local storage.

    `target`: a DTensor (its `_local_tensor` is written) or a plain tensor (the whole of it). `draw`
    is the service's materialize (LocalService.draw). An elementwise law is drawn box by box, at most
    CHUNK elements at a time; a whole-tensor law once, whole, then cut into the same boxes."""
    import torch

    local = _local(target)
    where_and_boxes = list(local_boxes(global_indices(target)))
    if not where_and_boxes:
        return
    whole = None if planned.elementwise else draw(planned, seed, local.device, scale)
    with torch.no_grad():
        for where, box in where_and_boxes:
            if whole is not None:
                part = whole[tuple(slice(start, stop) for start, stop in box)]
            else:
                part = draw(planned.model_copy(update={"slice": box}), seed, local.device, scale)
            local[where].copy_(part)


def global_indices(target: torch.Tensor) -> list[list[int]]:
    """Per dimension, the global indices `target`'s local tensor holds, in local order.

    A plain tensor holds all of each dimension. A DTensor's Shard/_StridedShard placements are
    applied mesh dimension by mesh dimension, each narrowing the indices left on its tensor
    dimension, as compute_local_shape_and_global_offset does (torch.chunk sizes). Raises
    ValueError for Partial, RuntimeError if the result disagrees with the local tensor's shape."""
    from torch.distributed.tensor import DTensor

    shape = list(target.shape)
    indices = [list(range(n)) for n in shape]
    if not isinstance(target, DTensor):
        return indices
    mesh = target.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # this rank is not in the mesh: it holds nothing
        return [[] for _ in shape]
    for mesh_dim, placement in enumerate(target.placements):
        if placement.is_partial():
            raise ValueError(_partial_message(placement))
        dim = getattr(placement, "dim", None)  # Shard and _StridedShard have one, Replicate none
        if dim is not None:
            kept = _shard_positions(placement, len(indices[dim]), mesh.size(mesh_dim), coordinate[mesh_dim])
            indices[dim] = [indices[dim][i] for i in kept]
    held = [len(i) for i in indices]
    if held != list(target.to_local().shape):
        raise RuntimeError(
            f"the shard this rank holds is {list(target.to_local().shape)} but its placements "
            f"{target.placements} give {held}; this torch's DTensor layout is not one initium knows"
        )
    return indices


def local_boxes(indices: Sequence[Sequence[int]], chunk: int = CHUNK) -> Iterator[tuple[tuple[slice, ...], Box]]:
    """(local slices, global box) pairs covering the local tensor: the product of each dimension's
    runs of consecutive global indices, split along the first dimension into at most `chunk`
    elements (one row at least). A 0-dimensional tensor is one empty box."""
    per_dim = [_runs(i) for i in indices]
    for pieces in itertools.product(*per_dim):
        box = [(start, stop) for _, (start, stop) in pieces]
        at = [position for position, _ in pieces]
        if not box:
            yield (), []
            return
        inner = math.prod(stop - start for start, stop in box[1:])
        rows = max(1, chunk // max(1, inner))
        first_start, first_stop = box[0]
        for row in range(first_start, first_stop, rows):
            stop = min(row + rows, first_stop)
            sub = [(row, stop), *box[1:]]
            rest = (slice(p, p + b - a) for p, (a, b) in zip(at[1:], box[1:], strict=True))
            where = (slice(at[0] + row - first_start, at[0] + stop - first_start), *rest)
            yield where, sub


def _runs(indices: Sequence[int]) -> list[tuple[int, tuple[int, int]]]:
    """(local position, (global start, stop)) of each maximal run of consecutive global indices."""
    runs: list[tuple[int, tuple[int, int]]] = []
    for position, index in enumerate(indices):
        if runs and runs[-1][1][1] == index:
            runs[-1] = (runs[-1][0], (runs[-1][1][0], index + 1))
        else:
            runs.append((position, (index, index + 1)))
    return runs


def _shard_positions(placement: object, size: int, chunks: int, rank: int) -> list[int]:
    """Positions (into the `size` indices left on the placement's dimension) that mesh coordinate
    `rank` keeps, by DTensor's own split (torch.chunk's uneven sizes; _StridedShard's offsets)."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard, _StridedShardOffsetMode

    if isinstance(placement, _StridedShard):
        length, offsets = placement.local_shard_size_and_offset(size, chunks, rank, _StridedShardOffsetMode.ALL)
        return list(offsets) if isinstance(offsets, list) and length else []
    if isinstance(placement, Shard):
        length, offset = Shard.local_shard_size_and_offset(size, chunks, rank)
        return list(range(int(offset), int(offset) + int(length)))
    raise RuntimeError(f"placement {placement} shards a dimension in a way initium does not know")


def _local(target: torch.Tensor) -> torch.Tensor:
    """The storage a rank writes: a DTensor's local tensor itself (to_local() may hand back a view
    made for autograd), a plain tensor's data."""
    from torch.distributed.tensor import DTensor

    return target._local_tensor if isinstance(target, DTensor) else target.data


def _mesh_device(named: Mapping[str, torch.Tensor]) -> torch.device:
    import torch
    from torch.distributed.tensor import DTensor

    mesh = next(t.device_mesh for t in named.values() if isinstance(t, DTensor))
    return torch.device(mesh.device_type)


def _refuse_partial(named: Mapping[str, torch.Tensor]) -> None:
    from torch.distributed.tensor import DTensor

    for name, tensor in named.items():
        if isinstance(tensor, DTensor):
            partial = next((p for p in tensor.placements if p.is_partial()), None)
            if partial is not None:
                raise ValueError(f"{name}: {_partial_message(partial)}")


def _partial_message(placement: object) -> str:
    return (
        f"a DTensor placed {placement} (Partial) holds a pending reduction, not values; initialize the module "
        "before the step that makes it Partial, or redistribute it to Shard or Replicate first"
    )


def _materialize_meta(module: torch.nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """`module` with no meta tensor left: a meta module gets storage on `device` by to_empty (the
    FSDP2 recipe: FSDP2 resets its sharded parameters under to_empty), and every tensor that had
    values already (the buffers the framework computed) keeps them. Returns named_tensors after."""
    named = named_tensors(module)
    if not any(_local(t).is_meta for t in named.values()):
        return named
    # to_empty replaces every tensor, meta or not: parameters in place (their .data), so the values
    # to keep are copied out first.
    kept = {name: _local(t).clone() for name, t in named.items() if not _local(t).is_meta}
    module.to_empty(device=device)
    named = named_tensors(module)
    import torch

    with torch.no_grad():
        for name, values in kept.items():
            _local(named[name]).copy_(values)
    return named
