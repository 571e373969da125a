"""torch helpers (imported lazily): describe an nn.Module as a manifest spec, and load results into it.

spec_from_module walks the module without touching values, so it works on the meta device: build a
7B model under `torch.device("meta")`, describe it, and let the service generate the weights.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from initium.client._context import LayerContext, layer_contexts
from initium.client._families import family_fields
from initium.client._fused import fused_parts
from initium.client._load import fill_meta_buffers, load_tensors
from initium.client._modules import module_type
from initium.schemas.dtypes import DTYPES
from initium.schemas.spec import Manifest, ManifestTensor

if TYPE_CHECKING:
    import torch

    from initium.client._result import InitResult

# str(torch dtype) -> the wire name, for every float dtype of the one table.
_DTYPES = {f"torch.{info.torch}": name for name, info in ((n, DTYPES.get(n)) for n in DTYPES.names()) if info.floating}
_BUFFER_ROLES = ("running_mean", "running_var", "num_batches_tracked")


def _fans(module: torch.nn.Module) -> tuple[int | None, int | None]:
    """Explicit fans only where the layout is not torch's; otherwise the service derives them from
    the shapes (and gives each bias its weight's), exactly as for a tree spec."""
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and weight is not None:
        # HF GPT-2's Conv1D stores [in, out], the transpose of nn.Linear: its fans are the other way round.
        return int(weight.shape[0]), int(weight.shape[1])
    return None, None


def _tensor(
    root: torch.nn.Module, prefix: str, module: torch.nn.Module, local: str, tensor: torch.Tensor, kind: str,
    roles: list[str], context: LayerContext,
) -> ManifestTensor:  # fmt: skip
    """One manifest entry: what the tensor and its module say, its fused blocks (each with its own
    fans: pytorch/pytorch#166378), its family's extra facts, and what is known of its layer."""
    name = f"{prefix}.{local}" if prefix else local
    role = local if local in _BUFFER_ROLES else ("bias" if "bias" in local else "weight")
    fan_in, fan_out = _fans(module) if tensor.dim() else (1, 1)
    # A norm's zero_centered is about its scale, not its shift.
    known = [r for r in context.roles if not (r == "zero_centered" and role != "weight")]
    return ManifestTensor.model_validate(
        {"name": name, "shape": list(tensor.shape), "module_type": kind, "role": role,
         "roles": list(dict.fromkeys([*roles, *known])), "fan_in": fan_in, "fan_out": fan_out,
         "hidden_size": getattr(module, "hidden_size", None) if kind in ("rnn", "lstm", "gru") else None,
         "groups": getattr(module, "groups", 1) if kind.startswith("conv") else 1,
         "padding_idx": getattr(module, "padding_idx", None) if kind == "embedding" else None,
         "parts": fused_parts(root, prefix, module, local, tuple(tensor.shape)),
         "followed_by": context.followed_by, **family_fields(root, prefix, local)}
    )  # fmt: skip


def spec_from_module(
    module: torch.nn.Module, name: str | None = None, roles: Mapping[str, Sequence[str]] | None = None
) -> tuple[Manifest, dict[str, str]]:
    """The manifest of `module`'s parameters (and batch-norm statistics), plus its tied names.

    Tied parameters (an lm_head sharing the embedding) are listed once; the second dict maps each
    other name to the one listed. `roles` tags tensors by name glob, e.g. {"lm_head.weight": ["classifier"]}.
    """
    import torch

    tensors: list[ManifestTensor] = []
    listed: dict[int, str] = {}
    aliases: dict[str, str] = {}
    # nn.MultiheadAttention's out_proj is a Linear child that MHA itself initializes (bias 0).
    attention_outputs = {id(m.out_proj) for m in module.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    contexts = layer_contexts(module)
    for prefix, child in module.named_modules():
        kind = "multihead_attention" if id(child) in attention_outputs else module_type(child)
        context = contexts.get(id(child), LayerContext())
        extra = ["attention_output"] if id(child) in attention_outputs else []
        for local, tensor in [*child.named_parameters(recurse=False), *_stat_buffers(child)]:
            full = f"{prefix}.{local}" if prefix else local
            if id(tensor) in listed:
                aliases[full] = listed[id(tensor)]
                continue
            listed[id(tensor)] = full
            tags = [r for glob, rs in (roles or {}).items() if fnmatch.fnmatchcase(full, glob) for r in rs]
            tensors.append(_tensor(module, prefix, child, local, tensor, kind, [*extra, *tags], context))
    return Manifest(name=name or type(module).__name__, tensors=tensors), aliases


def _stat_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, b) for n, b in module.named_buffers(recurse=False) if n in _BUFFER_ROLES and b is not None]


def module_dtype(module: torch.nn.Module) -> str:
    for p in module.parameters():
        if p.is_floating_point():
            return _DTYPES.get(str(p.dtype), "float32")
    return "float32"


def initialize_module(
    initialize: Callable[..., InitResult],
    module: torch.nn.Module,
    *,
    policy: Any,
    seed: int = 0,
    dtype: str | None = None,
    roles: Mapping[str, Sequence[str]] | None = None,
    timeout: float | None = None,
) -> InitResult:
    """Describe `module`, initialize it through `initialize` (a Client's, or a local one's), load it."""
    import torch

    spec, aliases = spec_from_module(module, roles=roles)
    # Buffers first: one that cannot be computed fails the call before the service generates anything.
    fill_meta_buffers(module, {t.name for t in spec.tensors} | set(aliases), torch.device("cpu"))
    result = initialize(spec=spec, policy=policy, seed=seed, dtype=dtype or module_dtype(module), timeout=timeout)
    load_tensors(module, result.tensors, aliases)
    return result


def shard_slices(
    shapes: Mapping[str, Sequence[int]], rank: int, world_size: int, dim: int = 0
) -> dict[str, list[list[int]]]:
    """The `slices` of one tensor-parallel rank: each tensor's `dim` cut into world_size equal
    contiguous blocks (Megatron's column/row split), the rank's block requested. Tensors whose `dim`
    does not divide evenly raise, naming the tensor. With shapes from a plan:
    `client.initialize(req, slices=shard_slices({t.name: t.shape for t in client.plan(req).tensors
    if t.name.endswith("q_proj.weight")}, rank, world_size))`."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    out = {}
    for name, shape in shapes.items():
        if dim >= len(shape) or shape[dim] % world_size:
            raise ValueError(f"{name} {list(shape)}: dimension {dim} does not split into {world_size} equal blocks")
        block = shape[dim] // world_size
        out[name] = [[rank * block, (rank + 1) * block] if d == dim else [0, n] for d, n in enumerate(shape)]
    return out
