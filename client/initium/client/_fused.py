"""Fused projections of Hugging Face models: the q/k/v or gate/up blocks a packed weight holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

QKV = ("query", "key", "value")
GATE_UP = ("gate", "up")

# A layout: (the module that owns the fused layer, the layer's attribute name on it, the layer's
# output size) -> each block's output size and role, or None when that attribute is not fused.
Blocks = tuple[list[int], tuple[str, ...]]
Layout = Callable[[Any, str, int], Blocks | None]


def _equal(attr: str, roles: tuple[str, ...]) -> Layout:
    """`attr` holds len(roles) equal contiguous blocks of outputs, in that order."""

    def layout(owner: Any, name: str, n: int) -> Blocks | None:
        if name != attr or n % len(roles):
            return None
        return [n // len(roles)] * len(roles), roles

    return layout


def _gpt2(owner: Any, name: str, n: int) -> Blocks | None:
    """modeling_gpt2.py (and its copies in modeling_imagegpt.py, modeling_decision_transformer.py):
    c_attn is Conv1D(3E, E) split into q, k, v; in cross-attention it is Conv1D(2E, E), projecting
    the encoder states to k and v, while q_attn is a plain (unfused) query projection."""
    roles = QKV[1:] if getattr(owner, "is_cross_attention", False) else QKV
    return _equal("c_attn", roles)(owner, name, n)


def _gpt_bigcode(owner: Any, name: str, n: int) -> Blocks | None:
    """modeling_gpt_bigcode.py: with multi_query, c_attn is [q (E), k (kv_dim), v (kv_dim)]. Without
    it the outputs are interleaved per head ([q_h, k_h, v_h] for each head h): contiguous blocks
    would have to be one head wide, and their fans (E, head_dim) would not be the q projection's
    (E, E), so that layout is left whole rather than split with wrong fans. Cross-attention's c_attn
    is left whole too (its forward splits it by head_dim, not as two E-wide projections)."""
    if name != "c_attn" or not getattr(owner, "multi_query", False) or getattr(owner, "is_cross_attention", False):
        return None
    e, kv = int(owner.embed_dim), int(owner.kv_dim)
    return [e, kv, kv], QKV


def _phi3_attention(owner: Any, name: str, n: int) -> Blocks | None:
    """modeling_phi3.py (and modeling_phi4_multimodal.py): qkv_proj outputs num_attention_heads *
    head_dim queries, then num_key_value_heads * head_dim keys and as many values (grouped-query)."""
    if name != "qkv_proj":
        return None
    head_dim = int(owner.head_dim)
    q, kv = int(owner.config.num_attention_heads) * head_dim, int(owner.num_key_value_heads) * head_dim
    return [q, kv, kv], QKV


def _falcon(owner: Any, name: str, n: int) -> Blocks | None:
    """modeling_falcon.py: with multi_query (and the old decoder architecture), query_key_value is
    [q (num_heads * head_dim), k (head_dim), v (head_dim)]. The other two layouts interleave q, k
    and v per head or per key/value group, which contiguous blocks cannot express with right fans."""
    if name != "query_key_value" or not getattr(owner, "multi_query", False):
        return None
    if getattr(owner, "new_decoder_architecture", False):
        return None
    head_dim = int(owner.head_dim)
    return [int(owner.num_heads) * head_dim, head_dim, head_dim], QKV


# By the owning class's name (any class in its MRO, so subclasses and the SDPA/flash variants
# count), or by module and name where the name alone is too common. Each entry was read off the
# forward in transformers 5.18's modeling file. Left out, because their outputs are interleaved per
# head (a one-head block's fans would be wrong): GPT-NeoX's and Persimmon's query_key_value (GPT-NeoX
# views it as [heads, 3 * head_dim]), Bloom's, CodeGen's qkv_proj, and Falcon's unless multi_query.
# MoE experts' gate_up_proj parameters [experts, 2I, H] are left out too: their fans are per expert,
# which the whole tensor's fans do not describe to begin with.
_LAYOUTS: dict[str, Layout] = {
    "GPT2Attention": _gpt2,
    "ImageGPTAttention": _gpt2,
    "DecisionTransformerGPT2Attention": _gpt2,
    "transformers.models.openai.modeling_openai.Attention": _equal("c_attn", QKV),
    "GPTBigCodeAttention": _gpt_bigcode,
    "FalconAttention": _falcon,
    "Phi3Attention": _phi3_attention,
    "Phi4MultimodalAttention": _phi3_attention,
    # gate, up = gate_up_proj(x).chunk(2); up * act(gate): the activated half is the gate.
    "Phi3MLP": _equal("gate_up_proj", GATE_UP),
    "Phi4MultimodalMLP": _equal("gate_up_proj", GATE_UP),
    "GlmMLP": _equal("gate_up_proj", GATE_UP),
    "Glm4MLP": _equal("gate_up_proj", GATE_UP),
    "DiaMLP": _equal("gate_up_proj", GATE_UP),
    # up, gate = gate_up_proj(x).chunk(2): this one stores the activated half second.
    "Phi4MultimodalAudioMLP": _equal("gate_up_proj", ("up", "gate")),
    "MptAttention": _equal("Wqkv", QKV),
    "ModernBertAttention": _equal("Wqkv", QKV),
    # input, gate = Wi(x).chunk(2); act(input) * gate: ModernBERT's "input" is the activated half.
    "ModernBertMLP": _equal("Wi", GATE_UP),
    # qkv(x).reshape(..., 3, heads, head_dim): q, k and v blocks of E outputs each.
    "BlipAttention": _equal("qkv", QKV),
    "Blip2Attention": _equal("qkv", QKV),
    "SamVisionAttention": _equal("qkv", QKV),
    "VitDetAttention": _equal("qkv", QKV),
    "Qwen2_5_VLVisionAttention": _equal("qkv", QKV),
}


def _layout(owner: torch.nn.Module) -> Layout | None:
    for cls in type(owner).__mro__:
        found = _LAYOUTS.get(f"{cls.__module__}.{cls.__name__}") or _LAYOUTS.get(cls.__name__)
        if found is not None:
            return found
    return None


def fused_parts(
    root: torch.nn.Module, prefix: str, module: torch.nn.Module, local: str, shape: tuple[int, ...]
) -> dict[str, Any] | None:
    """The manifest `parts` (ManifestParts as JSON) of `module`'s tensor `local` of `shape`, when
    `module` (at `prefix` in `root`) is a known fused projection; else None.

    The blocks split the layer's outputs: axis 0 of an nn.Linear weight [out, in] and of any bias,
    axis 1 of a GPT-2 Conv1D weight, stored [in, out]. Known layers are recognised by the class of
    the module that owns them, by name, so this needs no transformers import.
    """
    parent, _, attr = prefix.rpartition(".")
    if not attr or local not in ("weight", "bias") or not shape:
        return None
    owner = root.get_submodule(parent)
    layout = _layout(owner)
    if layout is None:
        return None
    axis = 1 if type(module).__name__ == "Conv1D" and local == "weight" and len(shape) == 2 else 0
    # A class of a known name whose attributes are missing, or whose blocks do not tile the tensor
    # exactly (remote code, another version), is not the layout this was written for: leave it whole.
    try:
        blocks = layout(owner, attr, shape[axis])
    except (AttributeError, TypeError, ValueError):
        return None
    if blocks is None or sum(blocks[0]) != shape[axis]:
        return None
    sizes, roles = blocks
    return {"axis": axis, "sizes": sizes, "roles": list(roles)}
