"""What spec_from_module knows about a layer beyond its tensors: the activation its output reaches
first (`followed_by`) and the roles its place gives it (zero-centred norms, attention projections,
residual outputs, the classifier).

A torch module does not say what follows a layer; forward code does. So this reads what can be
known without running it: the order inside nn.Sequential, an activation module beside the layers
of a block (HF's MLPs, BertIntermediate, BertPooler), torch's own transformer layers, and
torchvision-style ResNet blocks. Where none applies, followed_by stays None and the plan says
"unknown" (issue 13, item 5): a manifest never claims that nothing follows when it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from initium.client._modules import WEIGHTED_CLASSES

if TYPE_CHECKING:
    import torch

# Norms whose forward multiplies by (1 + weight), so the weight is an offset from a gain of 1 and
# starts at 0. Found by reading every modeling_*.py of transformers 5.18 (each class has a test):
# class name -> its modeling file. NemotronLayerNorm1P is Megatron's layernorm_1p (zero-centred
# gamma); transformers' own _init_weights leaves it at 1, a gain of 2.
ZERO_CENTERED_NORMS: dict[str, str] = {
    "GemmaRMSNorm": "gemma", "Gemma2RMSNorm": "gemma2", "Gemma3RMSNorm": "gemma3",
    "RecurrentGemmaRMSNorm": "recurrent_gemma", "VaultGemmaRMSNorm": "vaultgemma",
    "T5GemmaRMSNorm": "t5gemma", "T5Gemma2RMSNorm": "t5gemma2", "MiniMaxM3VLRMSNorm": "minimax_m3_vl",
    "MuseGlimmerTextCenteredRMSNorm": "muse_glimmer", "NemotronLayerNorm1P": "nemotron",
    "Qwen3NextRMSNorm": "qwen3_next", "Qwen3_5RMSNorm": "qwen3_5", "Qwen3_5MoeRMSNorm": "qwen3_5_moe",
    "Qwen4ExpTextRMSNorm": "qwen4_exp", "Step3p7RMSNorm": "step3p7", "VideoPrismLayerNorm": "videoprism",
    "MoonshineStreamingLayerNorm": "moonshine_streaming",
}  # fmt: skip
# Classes whose offset is switched by an attribute (gamma + unit_offset).
_OFFSET_FLAGS = {"MoonshineStreamingLayerNorm": "unit_offset"}

_ACTIVATIONS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "SELU": "selu", "SiLU": "silu"}
_PASS_THROUGH = ("Dropout", "Flatten", "Identity", "BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm")
# A block's layer into its activation, and the layer after it, by HF's (and GPT-2's, T5's) names.
_MLP_IN = ("c_fc", "fc1", "fc_in", "gate_proj", "wi", "wi_0", "dense_h_to_4h", "w1", "lin1", "linear1")
_MLP_OUT = ("c_proj", "fc2", "fc_out", "down_proj", "wo", "dense_4h_to_h", "w2", "lin2", "linear2")
_GATED_UP = ("up_proj", "wi_1", "w3")
# Attention projections of transformers' and torch's attention blocks, by name.
_ATTENTION_ROLES = {
    "q_proj": "query", "k_proj": "key", "v_proj": "value", "query": "query", "key": "key", "value": "value",
    "q": "query", "k": "key", "v": "value",
}  # fmt: skip
_ATTENTION_OUT = ("o_proj", "out_proj", "o", "c_proj")
_HEADS = ("lm_head", "classifier", "score", "qa_outputs")


@dataclass
class LayerContext:
    followed_by: str | None = None
    roles: tuple[str, ...] = ()

    def add(self, followed_by: str | None = None, roles: tuple[str, ...] = ()) -> None:
        self.followed_by = followed_by if followed_by is not None else self.followed_by
        self.roles = (*self.roles, *(r for r in roles if r not in self.roles))


def is_zero_centered(module: torch.nn.Module) -> bool:
    """Whether `module` is a norm that multiplies by (1 + weight)."""
    name = type(module).__name__
    flag = _OFFSET_FLAGS.get(name)
    return name in ZERO_CENTERED_NORMS and (flag is None or bool(getattr(module, flag, False)))


def activation_name(module: torch.nn.Module) -> str | None:
    """initium's name for an activation module (torch's, or transformers' ACT2FN classes), else None."""
    name = type(module).__name__
    if name == "LeakyReLU":
        return f"leaky_relu(negative_slope={module.negative_slope})"
    if "GELU" in name or "GeLU" in name:
        return "gelu"
    if "SiLU" in name or "Swish" in name:
        return "silu"
    return _ACTIVATIONS.get(name.removesuffix("Activation"))


def layer_contexts(root: torch.nn.Module) -> dict[int, LayerContext]:
    """id(module) -> what is known of it; modules nothing is known of are absent."""
    found: dict[int, LayerContext] = {}

    def at(module: torch.nn.Module) -> LayerContext:
        return found.setdefault(id(module), LayerContext())

    for module in root.modules():
        if is_zero_centered(module):
            at(module).add(roles=("zero_centered",))
        _sequential(module, at, is_root=module is root)
        _block(module, at)
        _attention(module, at)
        _transformer_layer(module, at)
        _resnet_block(module, at)
    for name in _HEADS:
        head = getattr(root, name, None)
        if head is not None and _weighted(head):
            at(head).add("identity", ("classifier",))
    return found


def _weighted(module: torch.nn.Module) -> bool:
    return type(module).__name__ in WEIGHTED_CLASSES


def _sequential(module: torch.nn.Module, at: _At, is_root: bool) -> None:
    """Inside an nn.Sequential the forward order is the child order: the first activation after a
    layer (past norms, dropout and reshapes) follows it; a layer straight after it means none does."""
    import torch

    if not isinstance(module, torch.nn.Sequential):
        return
    children = list(module)
    for i, child in enumerate(children):
        if not _weighted(child):
            continue
        for later in children[i + 1 :]:
            act = activation_name(later)
            if act is not None or _weighted(later):
                at(child).add(act or "identity")
                break
            if not type(later).__name__.startswith(_PASS_THROUGH):
                break
        else:
            if is_root:  # the model's output: nothing follows
                at(child).add("identity")


def _block(module: torch.nn.Module, at: _At) -> None:
    """A block holding an activation module beside its layers (HF MLPs, BertIntermediate, BertPooler):
    the activation follows the block's input layer; its output layer writes into the residual."""
    children = dict(module.named_children())
    acts = [a for a in (activation_name(c) for c in children.values()) if a is not None]
    weighted = {n: c for n, c in children.items() if _weighted(c)}
    if len(set(acts)) != 1 or not weighted:
        return
    if len(weighted) == 1:
        # One layer and its activation (BertIntermediate, BertPooler), registered in forward order;
        # an activation registered first (a pre-activation block) may come before the layer: unknown.
        order = list(children)
        layer = next(iter(weighted))
        if any(activation_name(children[n]) and order.index(n) > order.index(layer) for n in order):
            at(weighted[layer]).add(acts[0])
        return
    for name, child in weighted.items():
        if name in _MLP_IN:
            at(child).add(acts[0])
        elif name in _MLP_OUT:
            at(child).add("identity", ("residual_output",))
        elif name in _GATED_UP:  # multiplied by the activated gate; no nonlinearity of its own
            at(child).add("identity")


def _attention(module: torch.nn.Module, at: _At) -> None:
    """transformers' attention blocks: separate q/k/v projections get their roles; the output
    projection writes into the residual stream (BERT's sits in a *SelfOutput beside its LayerNorm)."""
    kind = type(module).__name__
    if not type(module).__module__.startswith("transformers."):
        return
    children = {n: c for n, c in module.named_children() if _weighted(c)}
    if kind.endswith("Attention"):
        for name, child in children.items():
            if name in _ATTENTION_ROLES:
                at(child).add(roles=(_ATTENTION_ROLES[name],))
            elif name in _ATTENTION_OUT:
                at(child).add("identity", ("attention_output", "residual_output"))
    elif kind.endswith("Output") and "dense" in children and hasattr(module, "LayerNorm"):
        roles = ("attention_output", "residual_output") if kind.endswith("SelfOutput") else ("residual_output",)
        at(children["dense"]).add("identity", roles)


def _transformer_layer(module: torch.nn.Module, at: _At) -> None:
    """torch's nn.TransformerEncoderLayer / DecoderLayer: linear1 -> activation -> linear2 -> residual.
    Their activation is a function or a module; relu unless activation_relu_or_gelu says gelu."""
    import torch

    if not isinstance(module, (torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)):
        return
    act = module.activation
    name = activation_name(act) if isinstance(act, torch.nn.Module) else getattr(act, "__name__", None)
    at(module.linear1).add(name or "unknown")
    at(module.linear2).add("identity", ("residual_output",))


def _resnet_block(module: torch.nn.Module, at: _At) -> None:
    """torchvision-style ResNet blocks and stem: conv -> bn -> relu (the last conv's relu comes after
    the residual add), the classifier `fc` at the end."""
    import torch

    relu = getattr(module, "relu", None)
    if not isinstance(relu, torch.nn.ReLU) or not isinstance(getattr(module, "conv1", None), torch.nn.Conv2d):
        return
    for name, child in module.named_children():
        if name.startswith("conv") and _weighted(child):
            at(child).add("relu")
    downsample = getattr(module, "downsample", None)
    if isinstance(downsample, torch.nn.Sequential) and len(downsample) and _weighted(downsample[0]):
        at(downsample[0]).add("relu")
    fc = getattr(module, "fc", None)
    if isinstance(fc, torch.nn.Linear):
        at(fc).add("identity", ("classifier",))


if TYPE_CHECKING:
    from collections.abc import Callable

    _At = Callable[[torch.nn.Module], LayerContext]
