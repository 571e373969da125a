"""The probe's second input: the sequence a cross-attention layer reads its keys and values from.

A multihead_attention with kdim or vdim other than embed_dim attends to another sequence (an
encoder's output), which the spec tree does not describe. The probe and LSUV give it one drawn from
the seeded probe stream, so its keys and values have the widths its projections read, and a forward
pass and its recomputation for the backward pass see the same sequence on any device.
"""

from __future__ import annotations

import torch
from torch import nn

from initium.service.identity import tensor_key
from initium.service.materialize.sampling import Stream, sample
from initium.service.model.modules import Memory, MultiheadAttention
from initium.service.plan import distributions as d


def attach_memory(module: nn.Module, prefix: str, seed: int, device: torch.device) -> None:
    """Give every attention layer in `module` (named under `prefix`) that reads another sequence a
    seeded one: N(0, 1) values keyed by (seed, the layer's name and 'key' or 'value'), like the probe batch."""
    for name, layer in module.named_modules():
        if isinstance(layer, MultiheadAttention) and not layer._qkv_same_embed_dim:
            layer.memory = _memory(".".join(part for part in (prefix, name) if part), seed, device)


def _memory(path: str, seed: int, device: torch.device) -> Memory:
    def draw(role: str, shape: tuple[int, ...]) -> torch.Tensor:
        stream = Stream(tensor_key(seed, f"initium/probe/{path}.{role}"), device)
        return sample(d.Normal(0.0, 1.0), shape, stream).float()

    return draw
