"""Schemes that depend on where a tensor sits: depth, residual branches, width, what follows it.

They read the context the planner puts into Geometry (depth, n_blocks, residual_branches,
branch_layers, branch_index, followed_by) and resolve to the same laws as every other scheme.
"""

from __future__ import annotations

import math
import re

from initium.schemas import schemes as wire
from initium.schemas._module import NORM_TYPES
from initium.service.plan.distributions import Constant, Distribution, Normal, Uniform
from initium.service.plan.gain import calculate_gain
from initium.service.plan.schemes import Geometry, SchemeNotApplicableError, register_scheme, resolve


def _blocks(g: Geometry, given: int | None, scheme: str) -> int:
    n = given or g.n_blocks
    if n is None:
        raise SchemeNotApplicableError(f"{scheme} needs n_layers: the tensor is not inside a repeat, so give n_layers")
    return n


@register_scheme("scaled_normal")
def scaled_normal(p: wire.ScaledNormal, g: Geometry) -> Distribution:
    r"""Radford et al. (2019), GPT-2; Shoeybi et al. (2019), Megatron-LM: N(0, (std / \sqrt{2 N})^2).

    For the projections that write into the residual stream (two per block, hence 2 N), so the
    stream's variance stays independent of depth; nanoGPT applies it to every c_proj.weight.
    """
    return Normal(0.0, p.std / math.sqrt(2 * _blocks(g, p.n_layers, "scaled_normal")))


@register_scheme("depth_scaled_normal")
def depth_scaled_normal(p: wire.DepthScaledNormal, g: Geometry) -> Distribution:
    r"""torchtitan's depth_init (Llama 3 training): N(0, (std / \sqrt{2 (depth + 1)})^2), depth = layer index."""
    if g.depth is None:
        raise SchemeNotApplicableError("depth_scaled_normal needs a depth: put the block in a repeat")
    return Normal(0.0, p.std / math.sqrt(2 * (g.depth + 1)))


@register_scheme("fixup")
def fixup(p: wire.Fixup, g: Geometry) -> Distribution:
    r"""Zhang, Dauphin and Ma (2019), Fixup initialization: residual learning without normalization.

    Inside a residual branch of m weight layers among L branches: layers 1 .. m-1 draw He normal
    N(0, 2 / fan_mode) scaled by L^{-1/(2m-2)}, the branch's last layer is 0; outside branches the
    classifier (role 'classifier') is 0 and every other layer plain He normal; biases are 0.
    The reference code uses fan_out (hongyi-zhang/Fixup); mode chooses. With count_blocks, each
    block of a packed or fused weight counts as a layer (attention's q, k, v and output: m = 4).
    """
    if "bias" in g.roles:
        return Constant(0.0)
    if g.module_type == "parameter" and len(g.shape) < 2:
        # Fixup's scalar multiplier starts at 1 and its scalar biases (bias1a, bias2b, ...) at 0.
        return Constant(1.0 if "scale" in g.roles else 0.0)
    if len(g.shape) < 2:
        raise SchemeNotApplicableError(f"fixup initializes weight matrices, got shape {list(g.shape)}")
    he = math.sqrt(2.0 / (g.fan_in if p.mode == "fan_in" else g.fan_out))
    m, index = (g.branch_blocks, g.block_index) if p.count_blocks else (g.branch_layers, g.branch_index)
    if index is None:
        return Constant(0.0) if "classifier" in g.roles else Normal(0.0, he)
    if index == m - 1:
        return Constant(0.0)
    return Normal(0.0, he * g.residual_branches ** (-1.0 / (2 * m - 2)))


@register_scheme("t_fixup")
def t_fixup(p: wire.TFixup, g: Geometry) -> Distribution:
    r"""Huang, Perez, Ba and Volkovs (2020), Improving transformer optimization through better initialization.

    Xavier uniform for every weight, scaled by 0.67 N^{-1/4} in an encoder stack or (9 N)^{-1/4} in a
    decoder stack, except the query and key projections; embeddings N(0, d^{-1}) scaled by
    (9 N)^{-1/4}; biases 0. (The reference's extra sqrt(2) on v_proj undoes fairseq's 1/sqrt(2)
    Xavier gain on q, k, v; with plain Xavier it does not apply.)
    """
    n = _blocks(g, p.n_layers, "t_fixup")
    if "bias" in g.roles:
        return Constant(0.0)
    if g.module_type == "embedding":
        return Normal(0.0, g.fan_in**-0.5 * (9 * n) ** -0.25)
    bound = math.sqrt(6.0 / (g.fan_in + g.fan_out))
    if not {"query", "key"} & set(g.roles):
        bound *= 0.67 * n**-0.25 if p.stack == "encoder" else (9 * n) ** -0.25
    return Uniform(-bound, bound)


@register_scheme("mup")
def mup(p: wire.MuP, g: Geometry) -> Distribution:
    r"""Yang et al. (2022), Tensor Programs V: maximal update parametrization (muP), init part.

    Relative to a tuned base model of fan_in base_fan_in: input layers (embeddings; with
    input_layers 'embeddings_or_first' also the first weight layer reading the data, one infinite
    dimension, as the mup package's constant_std_init keeps it) keep std; hidden layers
    std \sqrt{base / fan_in} (variance 1 / fan_in); output layers std base / fan_in, or 0 with
    zero_readout; query projections 0 with zero_query (both as the mup package recommends). Pair it
    with muP's learning rates and the 1/d attention scale; this scheme only sets the initial values.
    """
    if p.zero_query and "query" in g.roles:
        return Constant(0.0)
    layer = p.layer
    if layer == "auto":
        layer = "input" if g.module_type == "embedding" else "output" if "classifier" in g.roles else "hidden"
        if layer == "hidden" and p.input_layers == "embeddings_or_first" and g.first_layer:
            layer = "input"
    if layer == "input":
        return Normal(0.0, p.std)
    ratio = p.base_fan_in / g.fan_in
    if layer == "hidden":
        return Normal(0.0, p.std * math.sqrt(ratio))
    return Constant(0.0) if p.zero_readout else Normal(0.0, p.std * ratio)


@register_scheme("relu_bias")
def relu_bias(p: wire.ReluBias, g: Geometry) -> Distribution:
    """Goodfellow, Bengio and Courville (2016), Deep Learning, section 6.3.1: set the biases of ReLU
    units to a small positive value, such as 0.1, so that they start active for most inputs.

    b = value (default 0.1) where a ReLU or leaky ReLU follows the layer, b = 0 elsewhere; a constant,
    so mean b and std 0.
    """
    if "bias" not in g.roles:
        raise SchemeNotApplicableError('relu_bias initializes biases; match it with "role": "bias"')
    follows_relu = (g.followed_by or "").startswith(("relu", "leaky_relu"))
    return Constant(p.value if follows_relu else 0.0)


@register_scheme("auto")
def auto(p: wire.Auto, g: Geometry) -> Distribution:
    """Resolve to the scheme `choose` picks for this tensor (the plan records which and why)."""
    return resolve(choose(g, p.unknown_follower)[0], g)


_SMALL_NORMAL = wire.Normal(scheme="normal", std=0.02)
# A manifest tensor whose layer's follower nobody recorded: the plan says so, never "nothing follows".
UNKNOWN = "unknown"
UNKNOWN_REASON = "what follows this layer is unknown"


def choose(g: Geometry, unknown_follower: str = "xavier_uniform") -> tuple[wire.SchemeParams, str]:
    """The concrete scheme `auto` uses for this tensor, and the reason in words; `unknown_follower`
    is what a weight gets when what follows its layer is unknown."""
    roles = set(g.roles)
    if g.module_type in NORM_TYPES or "zero_centered" in roles:
        if "zero_centered" in roles and "weight" in roles:
            return wire.Zeros(scheme="zeros"), (
                "zero-centred norm (its forward multiplies by 1 + weight): 0 is a gain of 1, plain normalization"
            )
        if "weight" in roles:
            return wire.Ones(scheme="ones"), "norm scale starts at 1: the layer starts as plain normalization"
        return wire.Zeros(scheme="zeros"), "norm shift starts at 0"
    if "bias" in roles:
        if g.module_type == "lstm" and "forget" in roles and "recurrent" not in roles:
            return wire.Ones(scheme="ones"), "LSTM forget-gate bias 1 (Jozefowicz et al. 2015; Keras unit_forget_bias)"
        return wire.Zeros(scheme="zeros"), "biases start at 0"
    if g.module_type in ("embedding", "parameter") or roles & {"query", "key", "value", "attention_output"}:
        return _SMALL_NORMAL, "embeddings, attention and raw parameters: N(0, 0.02^2) as GPT-2 and BERT"
    if "recurrent" in roles:
        return wire.Orthogonal(scheme="orthogonal"), "recurrent weights: orthogonal (Saxe et al. 2014; Keras)"
    if g.module_type in ("rnn", "lstm", "gru"):
        return wire.XavierUniform(scheme="xavier_uniform"), "recurrent input weights: Glorot uniform (Keras)"
    return _by_activation(g.followed_by, unknown_follower)


def _by_activation(follower: str | None, unknown_follower: str) -> tuple[wire.SchemeParams, str]:
    kind = (follower or "").split("(")[0]
    if kind in ("relu", "gelu", "silu"):
        return wire.KaimingNormal(scheme="kaiming_normal", nonlinearity="relu"), f"followed by {kind}: He et al. (2015)"
    if kind == "leaky_relu":
        slope = float(re.findall(r"[-+0-9.e]+", follower or "")[-1])
        params = wire.KaimingNormal(scheme="kaiming_normal", nonlinearity="leaky_relu", negative_slope=slope)
        return params, f"followed by leaky_relu({slope}): He et al. (2015)"
    if kind in ("tanh", "sigmoid", "lecun_tanh"):
        gain = calculate_gain(kind)
        return wire.XavierNormal(
            scheme="xavier_normal", gain=gain
        ), f"followed by {kind}: Glorot and Bengio (2010), gain {gain:.4g}"
    if kind == "selu":
        return wire.LecunNormal(scheme="lecun_normal"), "followed by selu: LeCun normal (Klambauer et al. 2017)"
    if kind == UNKNOWN and unknown_follower == "lecun_normal":
        return wire.LecunNormal(scheme="lecun_normal"), (
            f"{UNKNOWN_REASON}: LeCun normal keeps the variance through the layer (give followed_by to choose)"
        )
    if kind == UNKNOWN:
        return wire.XavierUniform(scheme="xavier_uniform"), f"{UNKNOWN_REASON}: Glorot uniform (auto@1's choice)"
    if kind in ("", "identity"):
        return wire.XavierUniform(scheme="xavier_uniform"), "no nonlinearity follows: Glorot uniform"
    return wire.XavierUniform(scheme="xavier_uniform"), f"followed by {kind}, which auto has no rule for: Glorot"
