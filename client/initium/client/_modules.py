"""The client's part of the layer-type registry: the torch.nn class each spec layer type describes.

spec_from_module gives a module's tensors the first registered type whose class it is an instance
of (so subclasses map as their base), then model libraries' own classes by their conventional
names, else `parameter`. Registered by name, so that importing this needs no torch.
tests/service/test_layer_registry.py holds every name here to a spec module type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from initium.schemas._module import WEIGHTED_SUM_TYPES
from initium.schemas.registry import Registry

if TYPE_CHECKING:
    import torch

# Spec layer type -> the name of its class in torch.nn.
TORCH_CLASSES: Registry[str] = Registry("torch layer type")
for _kind, _cls in (
    ("linear", "Linear"), ("conv1d", "Conv1d"), ("conv2d", "Conv2d"), ("conv3d", "Conv3d"),
    ("conv_transpose1d", "ConvTranspose1d"), ("conv_transpose2d", "ConvTranspose2d"),
    ("conv_transpose3d", "ConvTranspose3d"), ("embedding", "Embedding"), ("layer_norm", "LayerNorm"),
    ("rms_norm", "RMSNorm"), ("group_norm", "GroupNorm"), ("batch_norm1d", "BatchNorm1d"),
    ("batch_norm2d", "BatchNorm2d"), ("batch_norm3d", "BatchNorm3d"), ("instance_norm1d", "InstanceNorm1d"),
    ("instance_norm2d", "InstanceNorm2d"), ("instance_norm3d", "InstanceNorm3d"), ("lstm", "LSTM"),
    ("gru", "GRU"), ("rnn", "RNN"), ("multihead_attention", "MultiheadAttention"),
):  # fmt: skip
    TORCH_CLASSES.register(_kind)(_cls)

# Class names of the layers whose weights sum their inputs (torch's and HF GPT-2's Conv1D).
WEIGHTED_CLASSES = frozenset({*(TORCH_CLASSES.get(t) for t in WEIGHTED_SUM_TYPES), "Conv1D"})


def module_type(module: torch.nn.Module) -> str:
    """The spec layer type a manifest gives `module`'s tensors; `parameter` when none is known."""
    from torch import nn

    for kind in TORCH_CLASSES.names():
        if isinstance(module, getattr(nn, TORCH_CLASSES.get(kind))):
            return kind
    # Model libraries' own classes, by their conventional names (HF's LlamaRMSNorm, GPT-2's Conv1D).
    name = type(module).__name__
    if name.endswith("RMSNorm"):
        return "rms_norm"
    if name.endswith("LayerNorm"):
        return "layer_norm"
    if name == "Conv1D":
        return "linear"
    return "parameter"
