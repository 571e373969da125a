"""Version 2 of the built-in presets, and the model-family presets (t5, vit) added with it.

Each v2 is its v1's rules, unchanged and in order, then the rules that fix it: the last matching rule
wins, so the tail reads as the diff its changelog explains. Every v2, and every preset added here,
ends with the zero_centered rule: a norm whose forward multiplies by (1 + weight) (Gemma's RMSNorm)
starts at 0, a gain of 1, as Gemma's own _init_weights does.

The preset for each family of transformers 5.18, read off its _init_weights:
- GPT-2: gpt2 (Conv1D and embeddings N(0, 0.02^2), every c_proj N(0, (0.02 / sqrt(2 n_layer))^2)).
- Llama, Mistral, Qwen2: llama (no override of PreTrainedModel._init_weights: Linear and Embedding
  N(0, initializer_range^2) with the padding row 0, norms 1 and 0).
- Gemma: llama, whose v2 starts GemmaRMSNorm at 0 when the manifest tags it zero_centered.
- BERT: bert (its own override only zeroes the LM head's bias and fills buffers).
- OPT: bert (the same laws with its init_std, 0.02 by default; another value needs a rule).
- T5: t5 (per-projection fan_in laws, a query scaled by d_kv, embeddings N(0, 1)).
- ViT: vit (bert's laws, cls_token and position_embeddings trunc_normal_, mask_token 0).
"""

from __future__ import annotations

from typing import Any

from initium.schemas._module import MATRIX_TYPES
from initium.schemas.policy import Rule
from initium.schemas.presets import (
    _SMALL,
    Preset,
    _norms_and_biases,
    _preset,
    _rule,
    _weights,
    get_preset,
    register_preset,
)

ZERO_CENTERED = _rule({"scheme": "zeros"}, role="zero_centered")
_ZERO_CENTERED_NOTE = " Norm weights with role zero_centered (the forward multiplies by 1 + weight) start at 0."
_ZERO_CENTERED_CHANGE = (
    "Norm weights with role zero_centered (the forward multiplies by 1 + weight, as Gemma's RMSNorm does) start at "
    "0, a gain of 1, as Gemma's _init_weights starts them; @1 gave them its norm rule (1, a gain of 2)."
)


def _v2(name: str, changelog: str, fixes: list[Rule] | None = None, description: str | None = None) -> None:
    v1 = get_preset(f"{name}@1")
    register_preset(
        Preset(
            name=name,
            version=2,
            description=(description or v1.description) + _ZERO_CENTERED_NOTE,
            rules=[*v1.rules, *(fixes or []), ZERO_CENTERED],
            changelog=f"{changelog} {_ZERO_CENTERED_CHANGE}".strip(),
        )
    )


def _keras(init: dict[str, Any], match: dict[str, Any], **fields: Any) -> Rule:
    return Rule.model_validate({"match": match, "init": init, **fields})


_GLOROT = {"scheme": "xavier_uniform"}

for _name in ("kaiming-relu", "xavier", "torch-default", "flax-default", "gpt2", "llama", "bert", "t-fixup"):
    _v2(_name, "")

_v2(
    "resnet-kaiming",
    "The classifier's bias is the Linear default U(+-1/sqrt(fan_in)), as the description says and torchvision's "
    "ResNet draws it; in @1 the bias rule (0) came after the Linear rule and won.",
    [_rule({"scheme": "torch_default"}, type="linear", role="bias")],
)
_v2(
    "mup",
    "The model's first weight layer, when no embedding precedes it, is an input layer (mup input_layers "
    "'embeddings_or_first'): it reads the data, a finite width, and the mup package keeps a tensor with one infinite "
    "dimension at the base std (constant_std_init), so Linear(784 -> W) draws std 0.02; @1 scaled it as hidden "
    "(0.02 sqrt(256 / 784) = 0.0114).",
    _weights({"scheme": "mup", "base_fan_in": 256, "input_layers": "embeddings_or_first"}),
    "Yang et al. (2022), muP around a base width of 256 (override base_fan_in with a rule for your base model): "
    "input layers (embeddings, and the model's first weight layer when no embedding precedes it) N(0, 0.02^2), "
    "hidden weights std 0.02 sqrt(256 / fan_in), query projections and the classifier 0, biases 0, norms 1 and 0. "
    "Layers the recipe does not address keep torch's default.",
)
_v2(
    "fixup",
    "A packed or fused attention projection counts as its q, k and v matrices (fixup count_blocks), so attention is "
    "m = 4 layers as in Fixup and as the same network written with transformer_block counts it: q, k and v draw "
    "He L^(-1/6); @1 counted in_proj_weight and out_proj as two layers (He L^(-1/2)).",
    _weights({"scheme": "fixup", "count_blocks": True}),
    "Zhang et al. (2019): He init scaled by L^(-1/(2m-2)) in residual branches (each block of a packed attention "
    "projection one of the m layers), each branch's last layer 0, the classifier (role 'classifier') 0, biases 0, "
    "norms 1 and 0; scalar parameters: multipliers (role 'scale') 1, biases 0. Layers the recipe does not address "
    "keep torch's default.",
)
_v2(
    "keras-default",
    "Recurrent kernels as Keras 3 lays them out (rule packed 'whole'): the input kernel is one (input, k units) "
    "matrix, so Glorot counts fan_out = k units, and the recurrent kernel is orthogonal over the whole (units, k "
    "units) matrix (torch's weight_hh is its transpose: orthonormal columns, the same law); @1 drew each gate as "
    "its own matrix (Glorot with fan_out = units, one orthogonal block per gate). Grouped convolutions count "
    "fan_out over all filters, as Keras' kernel (k, in / groups, filters) does.",
    [*(_keras(_GLOROT, {"type": t, "role": "weight"}, packed="whole") for t in ("rnn", "lstm", "gru")),
     _keras({"scheme": "orthogonal"}, {"role": "recurrent", "name": "*weight_hh*"}, packed="whole"),
     *(_keras(_GLOROT, {"type": t, "role": "weight"}, fan_axes={"in_axes": [1], "out_axes": [0]})
       for t in ("conv1d", "conv2d", "conv3d"))],
    "Keras 3's layer defaults: kernels glorot_uniform with Keras' fans (an RNN, LSTM or GRU input kernel is one "
    "(input, k units) matrix), recurrent kernels orthogonal over the whole (units, k units) matrix, biases 0 with the "
    "LSTM forget-gate bias 1 (unit_forget_bias; on bias_ih, since torch adds two biases), embeddings U(-0.05, 0.05), "
    "norms 1 and 0. Attention projections are Glorot over each [E, E] projection: Keras' EinsumDense counts fans "
    "over its [E, heads, head_dim] kernel, which a torch layout does not carry. Layers the recipe does not address "
    "keep torch's default.",
)  # fmt: skip

_STD_1 = {"scheme": "normal", "std": 1.0}
_preset(
    "t5",
    "T5 as transformers' T5PreTrainedModel initializes it (initializer_factor 1; names as transformers' T5): every "
    "projection N(0, 1 / fan_in) (k, v, wi: d_model; o: n_heads d_kv; wo: d_ff), the query N(0, 1 / (d_model d_kv)) "
    "(needs head_dim, which spec_from_module gives), relative_attention_bias N(0, 1 / d_model) (its fan_in given as "
    "d_model), the shared embedding, an untied lm_head and a token classifier N(0, 1), RMSNorm 1, biases 0.",
    [*_weights({"scheme": "t5"}, ("linear",)), _rule(_STD_1, type="embedding", role="weight"), *_norms_and_biases(),
     _rule({"scheme": "t5", "query": True}, role="query", name="*.q.weight"),
     _rule({"scheme": "t5"}, name="*relative_attention_bias.weight"),
     _rule(_STD_1, name="*lm_head.weight"), _rule(_STD_1, name="*classifier.weight"), ZERO_CENTERED],
)  # fmt: skip
_preset(
    "vit",
    "ViT as transformers' ViTPreTrainedModel initializes it (initializer_range 0.02): Linear and the patch Conv2d "
    "N(0, 0.02^2), cls_token and position_embeddings (raw parameters) trunc_normal_(std=0.02) with torch's "
    "absolute bounds [-2, 2], mask_token 0, biases 0, LayerNorm 1 and 0.",
    [*_weights(_SMALL, MATRIX_TYPES), _rule(_SMALL, type="embedding", role="weight"),
     _rule({"scheme": "truncated_normal", "std": 0.02}, type="parameter"), *_norms_and_biases(),
     _rule({"scheme": "zeros"}, type="parameter", name="*mask_token"), ZERO_CENTERED],
)  # fmt: skip
register_preset(
    Preset(
        name="auto",
        version=2,
        description=get_preset("auto@1").description.replace("norms 1 and 0", "norms 1 and 0 (zero-centred norms 0)")
        + " Where a manifest does not say what follows a layer, weights get lecun_normal and the plan warns.",
        rules=[_rule({"scheme": "auto", "unknown_follower": "lecun_normal"})],
        changelog="A weight whose following activation is unknown (a manifest tensor without followed_by) gets "
        "lecun_normal, variance-preserving through the layer, and the plan warns and says how to give followed_by; "
        "@1 took unknown for 'no nonlinearity follows' and drew Glorot uniform (GPT-2's MLP through spec_from_module "
        "lost its GELU gain). Zero-centred norms (forward multiplies by 1 + weight) start at 0 in both versions.",
    )
)
