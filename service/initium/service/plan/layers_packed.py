"""Layers whose tensors pack several logical matrices: recurrent layers (one block per gate) and
multi-head attention (query, key and value blocks), named exactly as torch's state_dict names them."""

from __future__ import annotations

from initium.schemas import spec as s
from initium.schemas.plan import Role
from initium.service.plan.fans import torch_fans
from initium.service.plan.layers import LayerTensor, Part, register_layer

# Gate order inside torch's stacked weights (pytorch/pytorch#750 for LSTM's i, f, g, o).
GATES = {"rnn": (), "lstm": ("input", "forget", "cell", "output"), "gru": ("reset", "update", "new")}


def _parts(gates: tuple[str, ...], rows: int, fan_in: int) -> tuple[Part, ...]:
    """One part per gate of `rows` rows; its own fans are (fan_in, rows)."""
    return tuple(Part(i * rows, (i + 1) * rows, (gate,), fan_in, rows) for i, gate in enumerate(gates))


def _packed(name: str, shape: tuple[int, ...], role: Role, fans_of: tuple[int, ...], gates: tuple[str, ...],
            rows: int, extra: tuple[str, ...], hidden: int) -> LayerTensor:  # fmt: skip
    fan_in, fan_out = torch_fans(fans_of)
    return LayerTensor(
        name,
        shape,
        role,
        fan_in,
        fan_out,
        roles=extra,
        parts=_parts(gates, rows, fan_in),
        hidden_size=hidden,
    )


@register_layer("rnn", "lstm", "gru")
def recurrent(m: s.RNN | s.LSTM | s.GRU) -> list[LayerTensor]:
    gates = GATES[m.type]
    h = m.hidden_size
    stacked = max(1, len(gates)) * h
    proj = getattr(m, "proj_size", 0)
    h_out = proj or h
    directions = 2 if m.bidirectional else 1
    tensors: list[LayerTensor] = []
    for layer in range(m.num_layers):
        in_size = m.input_size if layer == 0 else h_out * directions
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih, w_hh = (stacked, in_size), (stacked, h_out)
            tensors += [
                _packed(f"weight_ih{suffix}", w_ih, "weight", w_ih, gates, h, (), h),
                _packed(f"weight_hh{suffix}", w_hh, "weight", w_hh, gates, h, ("recurrent",), h),
            ]
            if m.bias:
                # A bias takes the fans of the weight it is added to.
                tensors += [
                    _packed(f"bias_ih{suffix}", (stacked,), "bias", w_ih, gates, h, (), h),
                    _packed(f"bias_hh{suffix}", (stacked,), "bias", w_hh, gates, h, ("recurrent",), h),
                ]
            if proj:
                w_hr = (proj, h)
                tensors.append(_packed(f"weight_hr{suffix}", w_hr, "weight", w_hr, (), proj, ("projection",), h))
    return tensors


@register_layer("multihead_attention")
def multihead_attention(m: s.MultiheadAttention) -> list[LayerTensor]:
    """torch packs q, k, v into in_proj_weight [3E, E]; its fans then count 3E outputs, so xavier on it
    draws half the intended variance (pytorch/pytorch#166378). Here each block has its own fans."""
    e = m.embed_dim
    qkv = ("query", "key", "value")
    tensors: list[LayerTensor] = []
    if m.packed():
        tensors.append(_packed("in_proj_weight", (3 * e, e), "weight", (3 * e, e), qkv, e, (), 0))
    else:
        for role, width in zip(qkv, (e, m.kdim or e, m.vdim or e), strict=True):
            fan_in, fan_out = torch_fans((e, width))
            tensors.append(LayerTensor(f"{role[0]}_proj_weight", (e, width), "weight", fan_in, fan_out, roles=(role,)))
    if m.bias:
        tensors.append(_packed("in_proj_bias", (3 * e,), "bias", (3 * e, e), qkv, e, (), 0))
    if m.add_bias_kv:
        tensors += [
            LayerTensor(f"bias_{r}", (1, 1, e), "bias", e, e, roles=(role,))
            for r, role in (("k", "key"), ("v", "value"))
        ]
    tensors.append(LayerTensor("out_proj.weight", (e, e), "weight", e, e, roles=("attention_output",)))
    if m.bias:
        tensors.append(LayerTensor("out_proj.bias", (e,), "bias", e, e, roles=("attention_output",)))
    return tensors
