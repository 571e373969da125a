"""Manifest specs: a flat list of named tensors planned like the leaves of a tree.

Repeated blocks are recognised from the names, as torch names a ModuleList's children: in
`transformer.h.7.attn.c_proj.weight` the first numbered component makes the tensor block 7 of the
`transformer.h` stack, whose size is the number of distinct indices seen, so depth-aware schemes
(GPT-2's scaled projections, depth init) work on models extracted from torch modules too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import replace

from initium.schemas import spec as s
from initium.schemas.spec_manifest import ManifestParts
from initium.service.plan.fans import torch_fans
from initium.service.plan.layers import LayerTensor, Part
from initium.service.plan.layers_packed import GATES
from initium.service.plan.schemes_structural import UNKNOWN
from initium.service.plan.tree import Leaf

_BUFFERS = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0.0}
_INDEX = re.compile(r"^(.*?)\.(\d+)\.")


def manifest_followers(manifest: s.Manifest) -> list[str | None]:
    """What follows each tensor's layer; a manifest that does not say is "unknown", never "nothing"
    (issue 13: GPT-2's MLP was planned as if no GELU followed it)."""
    return [t.followed_by or UNKNOWN for t in manifest.tensors]


def manifest_sites(manifest: s.Manifest) -> list[tuple[Leaf, LayerTensor]]:
    stacks = _stacks(t.name for t in manifest.tensors)
    sites = [_site(t, i, stacks) for i, t in enumerate(manifest.tensors)]
    return _biases_take_their_weights_fans(manifest, sites)


def _biases_take_their_weights_fans(
    manifest: s.Manifest, sites: list[tuple[Leaf, LayerTensor]]
) -> list[tuple[Leaf, LayerTensor]]:
    """As in a tree spec, a bias without explicit fans takes those of the weight it is added to
    (`bias` -> `weight`, `bias_ih_l0` -> `weight_ih_l0`, `in_proj_bias` -> `in_proj_weight`)."""
    by_name = {t.name: lt for t, (_, lt) in zip(manifest.tensors, sites, strict=True)}
    out = []
    for t, (leaf, lt) in zip(manifest.tensors, sites, strict=True):
        weight = by_name.get(t.name[::-1].replace("saib", "thgiew", 1)[::-1])
        if (
            lt.role == "bias"
            and t.fan_in is None
            and t.fan_out is None
            and weight is not None
            and len(weight.shape) >= 2
        ):
            parts = tuple(replace(p, fan_in=weight.fan_in) for p in lt.parts)
            lt = replace(
                lt, fan_in=weight.fan_in, fan_out=weight.fan_out, initium_fans=weight.initium_fans, parts=parts
            )
        out.append((leaf, lt))
    return out


def _stacks(names: Iterable[str]) -> dict[str, int]:
    """Stack prefix -> its block count (the number of distinct indices after it)."""
    indices: dict[str, set[int]] = {}
    for name in names:
        match = _INDEX.match(name)
        if match:
            indices.setdefault(match.group(1), set()).add(int(match.group(2)))
    return {prefix: len(seen) for prefix, seen in indices.items()}


def _site(t: s.ManifestTensor, index: int, stacks: dict[str, int]) -> tuple[Leaf, LayerTensor]:
    module, _, local = t.name.rpartition(".")
    match = _INDEX.match(t.name)
    depth, repeats = (int(match.group(2)), stacks[match.group(1)]) if match else (None, None)
    leaf = Leaf(module, None, ("spec", "tensors", index), None, depth, repeats, t.module_type, tuple(t.roles))
    shape = tuple(t.shape)
    default = torch_fans(shape) if len(shape) >= 2 else (math.prod(shape), math.prod(shape))
    fans = (t.fan_in or default[0], t.fan_out or default[1])
    buffer = _BUFFERS.get(t.role)
    lt = LayerTensor(
        local, shape, t.role, *fans, buffer_value=buffer, integer=t.role == "num_batches_tracked",
        hidden_size=t.hidden_size or 0, roles=_packed_roles(t.module_type, local), parts=_parts(t, local, fans),
        groups=t.groups, initium_fans=_conv_fans(t, fans), post=_post(t), head_dim=t.head_dim,
    )  # fmt: skip
    return leaf, lt


def _post(t: s.ManifestTensor) -> tuple[str, ...]:
    # torch's Embedding.reset_parameters zeroes the padding row; it never receives a gradient.
    if t.padding_idx is not None and t.module_type == "embedding" and t.role == "weight" and t.padding_idx < t.shape[0]:
        return (f"zero_row:{t.padding_idx}",)
    return ()


def _conv_fans(t: s.ManifestTensor, fans: tuple[int, int]) -> tuple[int, int] | None:
    """The initium convention's conv fans, as the tree's conv layers compute them (see layers.py)."""
    if t.fan_in is not None or t.fan_out is not None or len(t.shape) < 3:
        return None
    if t.module_type.startswith("conv_transpose"):
        rf = math.prod(t.shape[2:])
        return (t.shape[0] // t.groups) * rf, t.shape[1] * rf
    if t.module_type.startswith("conv"):
        return fans[0], fans[1] // t.groups
    return None


def _packed_roles(kind: str, local: str) -> tuple[str, ...]:
    if kind in GATES and "_hh_" in local:
        return ("recurrent",)
    if kind in GATES and local.startswith("weight_hr"):
        return ("projection",)
    return ()


def _parts(t: s.ManifestTensor, local: str, fans: tuple[int, int]) -> tuple[Part, ...]:
    """The same blocks a tree spec gives these tensors: per gate, or per q/k/v projection; or the
    blocks the manifest declares (a fused projection)."""
    if t.parts is not None:
        return _declared_parts(t.parts, tuple(t.shape), fans)
    if t.module_type in GATES and local.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
        gates = GATES[t.module_type]
    elif t.module_type == "multihead_attention" and local in ("in_proj_weight", "in_proj_bias"):
        gates = ("query", "key", "value")
    else:
        return ()
    if not gates or t.shape[0] % len(gates):
        return ()
    rows = t.shape[0] // len(gates)
    fan_in = t.shape[1] if len(t.shape) >= 2 else fans[0]
    return tuple(Part(i * rows, (i + 1) * rows, (g,), fan_in, rows) for i, g in enumerate(gates))


def _declared_parts(parts: ManifestParts, shape: tuple[int, ...], fans: tuple[int, int]) -> tuple[Part, ...]:
    """A fused projection concatenates the outputs of several layers (GPT-2's c_attn holds q, k and
    v side by side), so each block reads all fan_in inputs and owns its share of the fan_out
    outputs: (fan_in, fan_out * size / shape[axis]), as for nn.MultiheadAttention's in_proj
    (pytorch/pytorch#166378). A bias's blocks get the same fans from its weight's."""
    fan_in, fan_out = fans
    out, start = [], 0
    for size, role in zip(parts.sizes, parts.roles, strict=True):
        own_out = max(1, fan_out * size // shape[parts.axis])
        out.append(Part(start, start + size, (role,), fan_in, own_out, axis=parts.axis))
        start += size
    return tuple(out)
