"""Model families whose init needs facts a tensor's shape does not carry: the manifest fields that say them.

transformers' T5 draws its query with std (d_model * d_kv)^-1/2 and its relative attention bias, an
Embedding [num_buckets, n_heads], with std d_model^-1/2 (T5PreTrainedModel._init_weights): neither
d_kv nor d_model can be read off those tensors' shapes, so spec_from_module adds them here. (Their
attention roles, query and residual_output, come from initium.client._context like every family's.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_T5_TYPES = ("t5",)


def _t5_class(owner: Any, name: str) -> bool:
    """`owner` is transformers' T5 class `name` (checked by name first, so that no other model imports transformers)."""
    if type(owner).__name__ != name:
        return False
    try:
        from transformers.models.t5 import modeling_t5
    except ImportError:
        return False
    return isinstance(owner, getattr(modeling_t5, name))


def family_fields(root: torch.nn.Module, prefix: str, local: str) -> dict[str, Any]:
    """The ManifestTensor fields (head_dim, fan_in) that a family's law needs for the tensor `local`
    of the module at `prefix` under `root`; {} for any other tensor or model."""
    if local != "weight" or getattr(getattr(root, "config", None), "model_type", None) not in _T5_TYPES:
        return {}
    owner_path, _, attr = prefix.rpartition(".")
    owner: Any = root.get_submodule(owner_path)
    if not _t5_class(owner, "T5Attention"):
        return {}
    if attr == "q":
        return {"head_dim": int(owner.key_value_proj_dim)}
    if attr == "relative_attention_bias":
        # T5 scales the bias table by the model width, as if it read d_model inputs.
        return {"fan_in": int(owner.d_model)}
    return {}
