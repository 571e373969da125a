"""Every init scheme: paper, formula, and the distribution it resolves to for one tensor.

A scheme is a pure function (params, geometry) -> Distribution; the worker samples that
distribution and the report's expected moments are read off it, so both come from one formula.
Fans follow torch.nn.init._calculate_fan_in_and_fan_out (see initium.service.plan.fans).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from initium.schemas import schemes as wire
from initium.schemas._module import NORM_TYPES, WEIGHTED_SUM_TYPES
from initium.service.plan.distributions import (
    Constant,
    DeltaOrthogonal,
    Dirac,
    Distribution,
    Eye,
    LooksLinear,
    Normal,
    Orthogonal,
    Sparse,
    TruncatedNormal,
    Uniform,
)
from initium.service.plan.gain import calculate_gain
from initium.service.registry import Registry

# std of N(0, 1) truncated to (-2, 2): dividing by it makes a +-2 std truncated normal keep the
# requested variance, as Keras and JAX variance_scaling do (keras-team/keras#8048).
TRUNCATED_STD_CORRECTION = 0.87962566103423978


@dataclass(frozen=True)
class Geometry:
    """What a scheme may know about its tensor: shape, the fans the planner derived, and its module."""

    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    module_type: str = ""
    roles: tuple[str, ...] = ("weight",)
    groups: int = 1
    hidden_size: int = 0  # recurrent layers
    torch_fans: tuple[int, int] | None = None  # the whole tensor's fans as torch computes them
    # Where the tensor sits, for the structural schemes:
    depth: int | None = None  # its block's index in the innermost repeat
    n_blocks: int | None = None  # how many blocks that repeat has (outside any: the spec's largest repeat)
    followed_by: str | None = None  # the activation its layer's output reaches first
    residual_branches: int = 0  # residual branches in the whole spec (Fixup's L)
    branch_layers: int = 0  # weight matrices in its own residual branch (Fixup's m)
    branch_index: int | None = None  # its position among them; None outside a branch or for biases
    branch_blocks: int = 0  # the same count with each block of a packed or fused weight as a layer
    block_index: int | None = None  # its (block's) position in that count
    first_layer: bool = False  # the model's first weight layer, with no embedding before it (muP's input)
    head_dim: int | None = None  # attention projections: one head's width, where the spec gives it


class SchemeNotApplicableError(ValueError):
    """The scheme cannot initialize a tensor of this shape (orthogonal on a vector, ...)."""


SchemeFn = Callable[[Any, Geometry], Distribution]
P = TypeVar("P")
_SCHEMES: Registry[SchemeFn] = Registry("scheme")


def register_scheme(
    name: str,
) -> Callable[[Callable[[P, Geometry], Distribution]], Callable[[P, Geometry], Distribution]]:
    return _SCHEMES.register(name)


def get_scheme(name: str) -> SchemeFn:
    return _SCHEMES.get(name)


def list_schemes() -> list[str]:
    return _SCHEMES.names()


def resolve(params: wire.SchemeParams, geometry: Geometry) -> Distribution:
    """The distribution `params` asks for on a tensor of this geometry."""
    return get_scheme(params.scheme)(params, geometry)


def _fan(geometry: Geometry, mode: str) -> int:
    return geometry.fan_in if mode == "fan_in" else geometry.fan_out


@register_scheme("zeros")
def zeros(p: wire.Zeros, g: Geometry) -> Distribution:
    """Fill with 0."""
    return Constant(0.0)


@register_scheme("ones")
def ones(p: wire.Ones, g: Geometry) -> Distribution:
    """Fill with 1."""
    return Constant(1.0)


@register_scheme("constant")
def constant(p: wire.Constant, g: Geometry) -> Distribution:
    """Fill with `value`."""
    return Constant(p.value)


@register_scheme("uniform")
def uniform(p: wire.Uniform, g: Geometry) -> Distribution:
    r"""Draw from U(a, b): mean (a + b) / 2, std (b - a) / \sqrt{12}."""
    return Uniform(p.a, p.b)


@register_scheme("normal")
def normal(p: wire.Normal, g: Geometry) -> Distribution:
    """Draw from N(mean, std^2)."""
    return Normal(p.mean, p.std)


@register_scheme("truncated_normal")
def truncated_normal(p: wire.TruncatedNormal, g: Geometry) -> Distribution:
    """Draw from N(mean, std^2) conditioned on a <= x <= b.

    bounds="absolute": a and b are values (torch's trunc_normal_, where std=0.02 with the default
    (-2, 2) truncates nothing, timm#1286); bounds="std": mean + a std and mean + b std (timm's
    trunc_normal_tf_, JAX). The realised std is below `std` unless the interval is wide: for
    (-2, 2) std units it is 0.8796 std; the plan shows the exact value.
    """
    low, high = p.absolute_bounds()
    return TruncatedNormal(p.mean, p.std, low, high)


@register_scheme("xavier_uniform")
def xavier_uniform(p: wire.XavierUniform, g: Geometry) -> Distribution:
    r"""Glorot, X. and Bengio, Y. (2010), Understanding the difficulty of training deep feedforward networks.

    U(-a, a) with a = gain \cdot \sqrt{6 / (fan_in + fan_out)}.
    """
    bound = p.gain * math.sqrt(6.0 / (g.fan_in + g.fan_out))
    return Uniform(-bound, bound)


@register_scheme("xavier_normal")
def xavier_normal(p: wire.XavierNormal, g: Geometry) -> Distribution:
    r"""Glorot, X. and Bengio, Y. (2010): N(0, std^2), std = gain \cdot \sqrt{2 / (fan_in + fan_out)}."""
    return Normal(0.0, p.gain * math.sqrt(2.0 / (g.fan_in + g.fan_out)))


@register_scheme("kaiming_uniform")
def kaiming_uniform(p: wire.KaimingUniform, g: Geometry) -> Distribution:
    r"""He, K. et al. (2015), Delving deep into rectifiers.

    U(-bound, bound), bound = gain \cdot \sqrt{3 / fan_mode}, gain = calculate_gain(nonlinearity, negative_slope).
    """
    gain = calculate_gain(p.nonlinearity, p.negative_slope)
    bound = gain * math.sqrt(3.0 / _fan(g, p.mode))
    return Uniform(-bound, bound)


@register_scheme("kaiming_normal")
def kaiming_normal(p: wire.KaimingNormal, g: Geometry) -> Distribution:
    r"""He, K. et al. (2015): N(0, std^2), std = gain / \sqrt{fan_mode}."""
    gain = calculate_gain(p.nonlinearity, p.negative_slope)
    return Normal(0.0, gain / math.sqrt(_fan(g, p.mode)))


@register_scheme("lecun_uniform")
def lecun_uniform(p: wire.LecunUniform, g: Geometry) -> Distribution:
    r"""LeCun, Y. et al. (1998), Efficient BackProp: U(-a, a), a = \sqrt{3 / fan_in} (variance 1 / fan_in)."""
    bound = math.sqrt(3.0 / g.fan_in)
    return Uniform(-bound, bound)


@register_scheme("lecun_normal")
def lecun_normal(p: wire.LecunNormal, g: Geometry) -> Distribution:
    r"""LeCun, Y. et al. (1998), as Keras, JAX and Flax define it: variance exactly 1 / fan_in.

    Truncated normal at +-2 sigma with sigma = \sqrt{1 / fan_in} / 0.87962566103423978, so the
    truncation does not shrink the variance (keras-team/keras#8048).
    """
    sigma = math.sqrt(1.0 / g.fan_in) / TRUNCATED_STD_CORRECTION
    return TruncatedNormal(0.0, sigma, -2 * sigma, 2 * sigma)


@register_scheme("orthogonal")
def orthogonal(p: wire.Orthogonal, g: Geometry) -> Distribution:
    """Saxe, A. et al. (2013), Exact solutions to the nonlinear dynamics of learning in deep linear networks.

    W = gain * Q on the [shape[0], prod(shape[1:])] view, Q Haar-distributed (Mezzadri 2007: QR of a
    Gaussian matrix with the signs of diag(R) folded into Q); rows orthonormal when wide, columns
    when tall. Every entry has mean 0 and RMS gain / sqrt(max(rows, cols)).
    """
    if len(g.shape) < 2:
        raise SchemeNotApplicableError(
            f"orthogonal needs a tensor with 2 or more dimensions, got shape {list(g.shape)}"
        )
    rows = g.shape[0]
    cols = math.prod(g.shape[1:])
    return Orthogonal(p.gain, rows, cols)


@register_scheme("variance_scaling")
def variance_scaling(p: wire.VarianceScaling, g: Geometry) -> Distribution:
    r"""Variance scaling as Keras and JAX define it (He et al. 2015, Glorot and Bengio 2010 as cases).

    var = scale / max(1, n), n = fan_in, fan_out or (fan_in + fan_out) / 2. truncated_normal:
    std = \sqrt{var} / 0.87962566103423978 cut at +-2 std, so the variance is exactly var;
    untruncated_normal: N(0, var); uniform: U(-\sqrt{3 var}, \sqrt{3 var}).
    """
    n = {"fan_in": g.fan_in, "fan_out": g.fan_out, "fan_avg": (g.fan_in + g.fan_out) / 2}[p.mode]
    var = p.scale / max(1.0, n)
    if p.distribution == "truncated_normal":
        sigma = math.sqrt(var) / TRUNCATED_STD_CORRECTION
        return TruncatedNormal(0.0, sigma, -2 * sigma, 2 * sigma)
    if p.distribution == "untruncated_normal":
        return Normal(0.0, math.sqrt(var))
    bound = math.sqrt(3 * var)
    return Uniform(-bound, bound)


@register_scheme("torch_default")
def torch_default(p: wire.TorchDefault, g: Geometry) -> Distribution:
    r"""Exactly the law a freshly constructed torch module's reset_parameters draws from.

    Linear, ConvNd and ConvTransposeNd weight: kaiming_uniform_(a=\sqrt{5}), i.e.
    U(+-1/\sqrt{fan_in}) with torch's fan_in (pytorch/pytorch#57109); their bias the same bound
    (0 when fan_in is 0); Embedding N(0, 1) (padding row zeroed); RNN, LSTM, GRU: every tensor
    U(+-1/\sqrt{hidden_size}); MultiheadAttention: in_proj (or q/k/v) xavier_uniform_ over the
    whole tensor, in_proj_bias and out_proj.bias 0, out_proj.weight the Linear default, bias_k and
    bias_v xavier_normal_; norm layers weight 1 and bias 0.
    """
    fan_in, fan_out = g.torch_fans or (g.fan_in, g.fan_out)
    if g.module_type in WEIGHTED_SUM_TYPES:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return Uniform(-bound, bound) if bound else Constant(0.0)
    if g.module_type == "embedding":
        return Normal(0.0, 1.0)
    if g.module_type in ("rnn", "lstm", "gru"):
        bound = 1 / math.sqrt(g.hidden_size)
        return Uniform(-bound, bound)
    if g.module_type == "multihead_attention":
        return _torch_attention_default(g, fan_in, fan_out)
    if g.module_type in NORM_TYPES:
        return Constant(1.0 if "weight" in g.roles else 0.0)
    raise SchemeNotApplicableError(f"torch_default does not know module type {g.module_type!r}")


def _torch_attention_default(g: Geometry, fan_in: int, fan_out: int) -> Distribution:
    if "attention_output" in g.roles:
        bound = 1 / math.sqrt(fan_in)
        return Uniform(-bound, bound) if "weight" in g.roles else Constant(0.0)
    if "bias" in g.roles:
        if len(g.shape) == 3:  # bias_k, bias_v [1, 1, E]: xavier_normal_
            return Normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        return Constant(0.0)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return Uniform(-bound, bound)


def _need_dims(name: str, g: Geometry, allowed: tuple[int, ...]) -> None:
    if len(g.shape) not in allowed:
        dims = " or ".join(f"{n}-D" for n in allowed)
        raise SchemeNotApplicableError(f"{name} needs a {dims} tensor, got shape {list(g.shape)}")


def _flat_centre(kernel: tuple[int, ...], centre: tuple[int, ...]) -> int:
    flat = 0
    for size, c in zip(kernel, centre, strict=True):
        flat = flat * size + c
    return flat


@register_scheme("eye")
def eye(p: wire.Eye, g: Geometry) -> Distribution:
    """gain on the diagonal, 0 elsewhere (torch.nn.init.eye_ with Keras Identity's gain); rectangular allowed."""
    _need_dims("eye", g, (2,))
    return Eye(p.gain, g.shape[0], g.shape[1], tile=False, noise=0.0)


@register_scheme("identity_plus_noise")
def identity_plus_noise(p: wire.IdentityPlusNoise, g: Geometry) -> Distribution:
    r"""Le, Jaitly and Hinton (2015), A simple way to initialize recurrent networks of rectified linear units.

    W = gain \cdot I + N(0, std^2): a ReLU RNN starts by carrying its state forward. A [k H, H]
    weight (k stacked gates) gets gain * I in each H x H block.
    """
    _need_dims("identity_plus_noise", g, (2,))
    rows, cols = g.shape
    if rows % cols:
        raise SchemeNotApplicableError(
            f"identity_plus_noise needs rows a multiple of columns, got shape {[rows, cols]}"
        )
    return Eye(p.gain, rows, cols, tile=True, noise=p.std)


@register_scheme("dirac")
def dirac(p: wire.Dirac, g: Geometry) -> Distribution:
    """The identity convolution, as torch.nn.init.dirac_: for each group and c < min(out / groups,
    in / groups), weight[group * out / groups + c, c, centre] = 1, centre = size // 2 per dimension."""
    _need_dims("dirac", g, (3, 4, 5))
    groups = p.groups or g.groups
    if g.shape[0] % groups:
        raise SchemeNotApplicableError(f"dirac: out_channels {g.shape[0]} is not divisible by groups {groups}")
    kernel = g.shape[2:]
    return Dirac(g.shape[0], g.shape[1], groups, math.prod(kernel), _flat_centre(kernel, tuple(k // 2 for k in kernel)))


@register_scheme("delta_orthogonal")
def delta_orthogonal(p: wire.DeltaOrthogonal, g: Geometry) -> Distribution:
    """Xiao et al. (2018), Dynamical isometry and a mean field theory of CNNs.

    W[:, :, centre] = gain * H, H an [out, in] matrix with orthonormal columns (out >= in), 0 at every
    other tap, so the conv is an isometry at init. The centre is (size - 1) // 2 per dimension, as the
    paper and JAX place it; torch's dirac_ uses size // 2, so for even kernels the two differ by one tap.
    """
    _need_dims("delta_orthogonal", g, (3, 4, 5))
    out_channels, in_channels, kernel = g.shape[0], g.shape[1], g.shape[2:]
    if out_channels < in_channels:
        raise SchemeNotApplicableError(
            f"delta_orthogonal needs out_channels >= in_channels per group, got {out_channels} < {in_channels}"
        )
    centre = _flat_centre(kernel, tuple((k - 1) // 2 for k in kernel))
    return DeltaOrthogonal(p.gain, out_channels, in_channels, math.prod(kernel), centre)


@register_scheme("sparse")
def sparse(p: wire.Sparse, g: Geometry) -> Distribution:
    """Martens (2010), Deep learning via Hessian-free optimization, as torch.nn.init.sparse_ does it.

    N(0, std^2) with exactly ceil(sparsity * rows) zeros in every column; the zero rows of each column
    are a uniformly random subset drawn from the tensor's own Philox stream (a mask key per entry),
    so the mask is reproducible too (torch's sparse_ ignores its generator, pytorch/pytorch#98200).
    """
    _need_dims("sparse", g, (2,))
    rows, cols = g.shape
    return Sparse(p.std, rows, cols, math.ceil(p.sparsity * rows))


@register_scheme("looks_linear")
def looks_linear(p: wire.LooksLinear, g: Geometry) -> Distribution:
    """Balduzzi et al. (2017), The shattered gradients problem: if looks linear, train deep.

    W = [W0, -W0] along the input dimension with W0 orthogonal times gain: fed CReLU features
    [x, -x], the layer computes W0 (relu(x) - relu(-x)) = W0 x, linear at
    init. The input dimension (shape[1]) must be even.
    """
    if len(g.shape) < 2 or g.shape[1] % 2:
        raise SchemeNotApplicableError(
            f"looks_linear needs an even input dimension (shape[1]), got shape {list(g.shape)}"
        )
    return LooksLinear(p.gain, g.shape[0], (g.shape[1] // 2) * math.prod(g.shape[2:]))


@register_scheme("random_walk")
def random_walk(p: wire.RandomWalk, g: Geometry) -> Distribution:
    r"""Sussillo, D. and Abbott, L. F. (2014), Random walk initialization for training very deep
    feedforward networks (arXiv:1412.6558).

    Back-propagation through a deep network multiplies the gradient by a fresh random matrix per
    layer, so the log of its norm is a random walk; N(0, g^2 / N), N = fan_in, with the g that
    makes the walk unbiased: linear g = \exp(1 / (2N)), relu g = \sqrt{2} \exp(1.2 / (\max(N, 6) - 2.4))
    (the paper's equations; max(N, 6) keeps the fit away from its pole at 2.4), tanh g = 1.13 (no
    closed form: the value TensorFlow's random-walk initializer, from the authors' group, fixes for
    every width). Mean 0, std g / \sqrt{N}.
    """
    n = g.fan_in
    if p.nonlinearity == "linear":
        gain = math.exp(1.0 / (2.0 * n))
    elif p.nonlinearity == "relu":
        gain = math.sqrt(2.0) * math.exp(1.2 / (max(n, 6) - 2.4))
    else:
        gain = 1.13
    return Normal(0.0, gain / math.sqrt(n))


# The context-dependent and model-family schemes register themselves on import.
from initium.service.plan import schemes_families, schemes_structural  # noqa: E402, F401
