"""Init schemes on the wire: one params model per scheme, tagged by `scheme`.

Adding a scheme is one model here plus one registered function in initium.service.plan.schemes;
a test holds the two sets equal.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from initium.schemas._base import WireModel

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FanMode = Literal["fan_in", "fan_out"]
# The nonlinearities torch.nn.init.calculate_gain knows (the same names, the same gains), and
# LeCun's scaled tanh, 1.7159 tanh(2x / 3), with the variance-preserving gain initium derives for it.
Nonlinearity = Literal[
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu", "lecun_tanh",
]  # fmt: skip


class Zeros(WireModel):
    """Every element 0."""

    scheme: Literal["zeros"]


class Ones(WireModel):
    """Every element 1."""

    scheme: Literal["ones"]


class Constant(WireModel):
    """Every element `value`."""

    scheme: Literal["constant"]
    value: FiniteFloat


class Uniform(WireModel):
    """U(a, b), as torch.nn.init.uniform_."""

    scheme: Literal["uniform"]
    a: FiniteFloat = 0.0
    b: FiniteFloat = 1.0

    @model_validator(mode="after")
    def _check_bounds(self) -> Uniform:
        if not self.a < self.b:
            raise ValueError(f"a must be less than b, got a={self.a}, b={self.b}")
        return self


class Normal(WireModel):
    """N(mean, std^2), as torch.nn.init.normal_."""

    scheme: Literal["normal"]
    mean: FiniteFloat = 0.0
    std: NonNegativeFloat = 1.0


class TruncatedNormal(WireModel):
    """N(mean, std^2) truncated to [a, b].

    bounds="absolute" (default) reads a and b as values, as torch.nn.init.trunc_normal_ does;
    bounds="std" reads them in std units around the mean, as timm's trunc_normal_tf_ and JAX do.
    """

    scheme: Literal["truncated_normal"]
    mean: FiniteFloat = 0.0
    std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    a: FiniteFloat = -2.0
    b: FiniteFloat = 2.0
    bounds: Literal["absolute", "std"] = "absolute"

    def absolute_bounds(self) -> tuple[float, float]:
        if self.bounds == "std":
            return self.mean + self.a * self.std, self.mean + self.b * self.std
        return self.a, self.b

    @model_validator(mode="after")
    def _check_bounds(self) -> TruncatedNormal:
        if not self.a < self.b:
            raise ValueError(f"a must be less than b, got a={self.a}, b={self.b}")
        # Beyond ~37 std the float64 normal CDF is exactly 0 or 1 and the interval holds no mass.
        low, high = self.absolute_bounds()
        lo, hi = (low - self.mean) / self.std, (high - self.mean) / self.std
        if lo > 37 or hi < -37 or math.isinf(lo) or math.isinf(hi):
            raise ValueError(
                f"[a, b] = [{self.a}, {self.b}] lies more than 37 std from mean={self.mean}; "
                "move the bounds towards the mean or raise std"
            )
        return self


class XavierUniform(WireModel):
    """Glorot and Bengio (2010): U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""

    scheme: Literal["xavier_uniform"]
    gain: NonNegativeFloat = 1.0


class XavierNormal(WireModel):
    """Glorot and Bengio (2010): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""

    scheme: Literal["xavier_normal"]
    gain: NonNegativeFloat = 1.0


class _Kaiming(WireModel):
    negative_slope: NonNegativeFloat = 0.0
    mode: FanMode = "fan_in"
    nonlinearity: Nonlinearity = "leaky_relu"


class KaimingUniform(_Kaiming):
    """He et al. (2015): U(-bound, bound), bound = gain * sqrt(3 / fan_mode)."""

    scheme: Literal["kaiming_uniform"]


class KaimingNormal(_Kaiming):
    """He et al. (2015): N(0, std^2), std = gain / sqrt(fan_mode)."""

    scheme: Literal["kaiming_normal"]


class LecunUniform(WireModel):
    """LeCun et al. (1998): U(-a, a), a = sqrt(3 / fan_in)."""

    scheme: Literal["lecun_uniform"]


class LecunNormal(WireModel):
    """LeCun et al. (1998) as Keras, JAX and Flax draw it: truncated normal with variance 1 / fan_in."""

    scheme: Literal["lecun_normal"]


class Orthogonal(WireModel):
    """Saxe et al. (2013): a Haar-random (semi-)orthogonal matrix times gain; dims after 0 flattened."""

    scheme: Literal["orthogonal"]
    gain: NonNegativeFloat = 1.0


class VarianceScaling(WireModel):
    """Keras and JAX's variance_scaling: variance scale / n, n = fan_in, fan_out or their mean.

    distribution truncated_normal: std sqrt(scale / n) / 0.87962566103423978, cut at 2 std (the
    correction keeps the variance); untruncated_normal: std sqrt(scale / n); uniform: U(+-sqrt(3 scale / n)).
    """

    scheme: Literal["variance_scaling"]
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = "truncated_normal"


class TorchDefault(WireModel):
    """What a freshly constructed torch module draws in reset_parameters, per module type and role."""

    scheme: Literal["torch_default"]


class Eye(WireModel):
    """The identity matrix times gain (torch.nn.init.eye_, Keras Identity); 2-D tensors only."""

    scheme: Literal["eye"]
    gain: FiniteFloat = 1.0


class Dirac(WireModel):
    """A conv kernel that passes each input channel through (torch.nn.init.dirac_); 3-, 4- and 5-D.

    groups: identity per group; None takes the conv's own groups.
    """

    scheme: Literal["dirac"]
    groups: Annotated[int, Field(ge=1)] | None = None


class DeltaOrthogonal(WireModel):
    """Xiao et al. (2018): an orthogonal [out, in] matrix times gain at the kernel centre, 0 elsewhere."""

    scheme: Literal["delta_orthogonal"]
    gain: NonNegativeFloat = 1.0


class Sparse(WireModel):
    """Martens (2010): N(0, std^2) with ceil(sparsity * rows) zeros in every column (torch.nn.init.sparse_)."""

    scheme: Literal["sparse"]
    sparsity: Annotated[float, Field(ge=0, le=1)]
    std: NonNegativeFloat = 0.01


class LooksLinear(WireModel):
    """Balduzzi et al. (2017): W = [W0, -W0] along the input dimension, W0 orthogonal times gain."""

    scheme: Literal["looks_linear"]
    gain: NonNegativeFloat = 1.0


class RandomWalk(WireModel):
    """Sussillo and Abbott (2014), Random walk initialization for training very deep feedforward
    networks: N(0, g^2 / N), N = fan_in, with the g that makes the log-norm of the back-propagated
    gradient an unbiased random walk for the network's nonlinearity: linear exp(1 / (2N)), relu
    sqrt(2) exp(1.2 / (max(N, 6) - 2.4)), tanh 1.13."""

    scheme: Literal["random_walk"]
    nonlinearity: Literal["linear", "relu", "tanh"]


class IdentityPlusNoise(WireModel):
    """Le, Jaitly and Hinton (2015): gain * I plus N(0, std^2) noise, for square recurrent weights.

    A [k * H, H] weight (stacked gates) gets the identity in each of its k blocks.
    """

    scheme: Literal["identity_plus_noise"]
    gain: FiniteFloat = 1.0
    std: NonNegativeFloat = 0.01


PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ScaledNormal(WireModel):
    """GPT-2 (Radford et al. 2019) and Megatron-LM's scaled init for residual output projections:
    N(0, (std / sqrt(2 n_layers))^2); n_layers defaults to the enclosing repeat's count."""

    scheme: Literal["scaled_normal"]
    std: PositiveFloat = 0.02
    n_layers: Annotated[int, Field(ge=1)] | None = None


class DepthScaledNormal(WireModel):
    """torchtitan's depth_init: N(0, (std / sqrt(2 (depth + 1)))^2), depth the block's index in its repeat."""

    scheme: Literal["depth_scaled_normal"]
    std: PositiveFloat = 0.02


class Fixup(WireModel):
    """Zhang, Dauphin and Ma (2019): He init scaled by L^(-1/(2m-2)) inside residual branches, the
    last layer of each branch and the classifier zero, other layers plain He init; Fixup's scalar
    parameters: multipliers (role 'scale') 1, scalar biases 0."""

    scheme: Literal["fixup"]
    mode: FanMode = "fan_out"
    count_blocks: bool = Field(
        False,
        description="count each block of a packed or fused weight (q, k and v of an in_proj, gate and up) as "
        "its own layer of the branch, as a transformer_block's separate projections count: attention is then "
        "m = 4 layers, as in Fixup; False counts one layer per tensor",
    )


class TFixup(WireModel):
    """Huang et al. (2020): Xavier init scaled by 0.67 N^(-1/4) (encoder) or (9 N)^(-1/4) (decoder) for
    value, output and MLP weights (query and key unscaled); embeddings N(0, d^-1) times (9 N)^(-1/4)."""

    scheme: Literal["t_fixup"]
    stack: Literal["encoder", "decoder"] = "encoder"
    n_layers: Annotated[int, Field(ge=1)] | None = None


class MuP(WireModel):
    """Yang et al. (2022), muP: variances that keep training dynamics width-independent.

    Relative to a base model of fan_in base_fan_in with init std `std`: input layers std,
    hidden layers std sqrt(base_fan_in / fan_in), output layers std base_fan_in / fan_in (or 0);
    query projections 0 with zero_query, as the mup package recommends.
    layer 'auto': embeddings are input, tensors with role 'classifier' output, the rest hidden;
    with input_layers 'embeddings_or_first' the model's first weight layer is input too when no
    embedding precedes it (it reads the data, whose width does not grow: the mup package keeps a
    tensor with one infinite dimension at the base std).
    """

    scheme: Literal["mup"]
    base_fan_in: Annotated[int, Field(ge=1)]
    std: PositiveFloat = 0.02
    layer: Literal["auto", "input", "hidden", "output"] = "auto"
    input_layers: Literal["embeddings", "embeddings_or_first"] = "embeddings"
    zero_readout: bool = True
    zero_query: bool = True


class T5(WireModel):
    """Raffel et al. (2020), T5, as Mesh TensorFlow and transformers initialize it: N(0, factor^2 / fan_in);
    with query, N(0, factor^2 / (fan_in * head_dim)) (T5 does not scale attention logits by
    head_dim^-1/2, so the query's init carries it; the tensor must give head_dim)."""

    scheme: Literal["t5"]
    factor: PositiveFloat = Field(1.0, description="transformers' initializer_factor")
    query: bool = False


class ReluBias(WireModel):
    """A small positive bias for units followed by a ReLU, so none starts dead (the TensorFlow
    tutorials' 0.1); 0 for every other bias."""

    scheme: Literal["relu_bias"]
    value: FiniteFloat = 0.1


class Auto(WireModel):
    """Pick per tensor from its module and what follows it; the plan records which and why.

    relu-like (relu, leaky_relu, gelu, silu): kaiming_normal; tanh, sigmoid, lecun_tanh: xavier_normal
    with their gain; selu: lecun_normal; nothing: xavier_uniform; unknown (a manifest tensor without
    followed_by): `unknown_follower`, with a plan warning; recurrent weights: orthogonal;
    embeddings, attention and raw parameters: N(0, 0.02^2); norms: 1 and 0, zero-centred norms
    (forward multiplies by 1 + weight) 0; biases: 0, but 1 for the LSTM forget gate's input bias.
    """

    scheme: Literal["auto"]
    # xavier_uniform is what auto@1 drew (it took "unknown" for "nothing follows"); the default keeps
    # those bytes under their request ids. auto@2 asks for lecun_normal: variance-preserving through
    # the layer whatever is linear after it, and Flax's default (issue 13).
    unknown_follower: Literal["xavier_uniform", "lecun_normal"] = Field(
        "xavier_uniform",
        description="the scheme for a weight whose following activation is unknown; the auto@2 preset "
        "uses lecun_normal",
    )


SchemeParams = Annotated[
    (
        Zeros
        | Ones
        | Constant
        | Uniform
        | Normal
        | TruncatedNormal
        | XavierUniform
        | XavierNormal
        | KaimingUniform
        | KaimingNormal
        | LecunUniform
        | LecunNormal
        | Orthogonal
        | VarianceScaling
        | TorchDefault
        | Eye
        | Dirac
        | DeltaOrthogonal
        | Sparse
        | LooksLinear
        | RandomWalk
        | IdentityPlusNoise
        | ScaledNormal
        | DepthScaledNormal
        | Fixup
        | TFixup
        | MuP
        | T5
        | ReluBias
        | Auto
    ),
    Field(discriminator="scheme"),
]


def _tag(model: type[WireModel]) -> str:
    tag: str = get_args(model.model_fields["scheme"].annotation)[0]
    return tag


# Wire name -> params model, read off the union so that the two cannot disagree.
SCHEME_MODELS: dict[str, type[WireModel]] = {_tag(model): model for model in get_args(get_args(SchemeParams)[0])}

__all__ = [
    "SCHEME_MODELS",
    "Auto",
    "DepthScaledNormal",
    "Fixup",
    "MuP",
    "ReluBias",
    "ScaledNormal",
    "TFixup",
    "T5",
    "Constant",
    "DeltaOrthogonal",
    "Dirac",
    "Eye",
    "IdentityPlusNoise",
    "LooksLinear",
    "RandomWalk",
    "Sparse",
    "TorchDefault",
    "VarianceScaling",
    "FanMode",
    "KaimingNormal",
    "KaimingUniform",
    "LecunNormal",
    "LecunUniform",
    "Nonlinearity",
    "Normal",
    "Ones",
    "Orthogonal",
    "SchemeParams",
    "TruncatedNormal",
    "Uniform",
    "XavierNormal",
    "XavierUniform",
    "Zeros",
]
