"""Model families whose init needs facts a tensor's shape does not carry: the manifest fields that say them.

transformers' T5 draws its query with std (d_model * d_kv)^-1/2 and its relative attention bias, an
Embedding [num_buckets, n_heads], with std d_model^-1/2 (T5PreTrainedModel._init_weights): neither
d_kv nor d_model can be read off those tensors' shapes, so spec_from_module adds them here, with the
attention roles other presets match (mup's zero query, gpt2's residual projections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from initium.schemas.spec import ManifestTensor

if TYPE_CHECKING:
    import torch

_T5_TYPES = ("t5",)
_T5_ROLES = {"q": ["query"], "k": ["key"], "v": ["value"], "o": ["attention_output", "residual_output"]}


def _t5_class(owner: Any, name: str) -> bool:
    """`owner` is transformers' T5 class `name` (checked by name first, so that no other model imports transformers)."""
    if type(owner).__name__ != name:
        return False
    try:
        from transformers.models.t5 import modeling_t5
    except ImportError:
        return False
    return isinstance(owner, getattr(modeling_t5, name))


def t5_context(root: torch.nn.Module, prefix: str, module: torch.nn.Module, local: str) -> dict[str, Any]:
    """The ManifestTensor fields (roles, head_dim, fan_in) that T5's laws need for the tensor `local` of the
    module at `prefix` under `root`; {} for any other tensor or model."""
    if local != "weight" or getattr(getattr(root, "config", None), "model_type", None) not in _T5_TYPES:
        return {}
    owner_path, _, attr = prefix.rpartition(".")
    try:
        owner: Any = root.get_submodule(owner_path)
    except AttributeError:
        return {}
    if _t5_class(owner, "T5Attention"):
        if attr == "q":
            return {"roles": _T5_ROLES["q"], "head_dim": int(owner.key_value_proj_dim)}
        if attr == "relative_attention_bias":
            # T5 scales the bias table by the model width, as if it read d_model inputs.
            return {"fan_in": int(owner.d_model)}
        return {"roles": _T5_ROLES[attr]} if attr in _T5_ROLES else {}
    if attr == "wo" and (_t5_class(owner, "T5DenseActDense") or _t5_class(owner, "T5DenseGatedActDense")):
        return {"roles": ["residual_output"]}
    return {}


def with_family(
    entry: ManifestTensor, root: torch.nn.Module, prefix: str, module: torch.nn.Module, local: str
) -> ManifestTensor:
    """`entry` with its model family's fields merged in (roles added to its own)."""
    context = t5_context(root, prefix, module, local)
    if not context:
        return entry
    roles = [*entry.roles, *(r for r in context.pop("roles", []) if r not in entry.roles)]
    return ManifestTensor.model_validate({**entry.model_dump(), **context, "roles": roles})
