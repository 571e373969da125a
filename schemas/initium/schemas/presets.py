"""Named, versioned policies: a registry of rule lists that any request can start from.

A (name, version) pair never changes its rules: published presets are immutable, and a request
id pins the version it resolved, so a later version cannot change a cached result. A fix is a new
version whose changelog says what changed and why; a bare name resolves to the newest version.

The built-ins live in a Registry (initium.schemas.registry) under their refs, `name@version`: this
module registers version 1 of each, presets_v2 the rest. The service's PresetStore keeps the
presets published at run time beside them and resolves refs over both with `resolve_ref`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from initium.schemas._base import WireModel
from initium.schemas._module import MATRIX_TYPES, NORM_TYPES
from initium.schemas.policy import MAX_PRESET_VERSION, Rule
from initium.schemas.registry import Registry


class Preset(WireModel):
    """A published policy."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    version: int = Field(ge=1, le=MAX_PRESET_VERSION)
    description: str = Field(max_length=4000)
    rules: list[Rule] = Field(min_length=1, max_length=10_000)
    changelog: str = Field("", max_length=4000, description="what this version changed from the one before, and why")

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class UnknownPresetError(LookupError):
    """The policy named a preset (or version) that is not registered."""


_PRESETS: Registry[Preset] = Registry("preset")
_VERSION = re.compile(r"^[0-9]{1,10}$")


def register_preset(preset: Preset) -> Preset:
    """Add a built-in under its ref; a (name, version) registered before raises ValueError."""
    return _PRESETS.register(preset.ref)(preset)


def list_presets() -> list[Preset]:
    return sorted(map(_PRESETS.get, _PRESETS.names()), key=lambda p: (p.name, p.version))


def resolve_ref(ref: str, known: Mapping[tuple[str, int], Preset]) -> Preset:
    """'name' (newest version) or 'name@version' among `known`."""
    name, _, version = ref.partition("@")
    versions = sorted(v for (n, v) in known if n == name)
    if not versions:
        every = sorted({n for n, _ in known})
        # A listing of thousands of published names is no help in one message: GET /v1/presets has them all.
        names = ", ".join(every[:20]) + (f" and {len(every) - 20} more (GET /v1/presets)" if len(every) > 20 else "")
        raise UnknownPresetError(f"unknown preset {name[:64]!r}; known presets: {names}")
    # A version that is not a number below 2^31 names nothing: int() would refuse one of 4,300 digits.
    wanted = versions[-1] if not version else int(version) if _VERSION.match(version) else None
    if wanted not in versions:
        raise UnknownPresetError(f"preset {name!r} has no version {version[:16]}; versions: {versions}")
    return known[(name, wanted)]


def get_preset(ref: str) -> Preset:
    """A built-in preset by reference."""
    return resolve_ref(ref, builtin_presets())


def builtin_presets() -> dict[tuple[str, int], Preset]:
    """(name, version) -> every built-in preset."""
    return {(p.name, p.version): p for p in map(_PRESETS.get, _PRESETS.names())}


# -- the built-in catalog -----------------------------------------------------------------------


def _rule(init: dict[str, Any], **match: Any) -> Rule:
    return Rule.model_validate({"match": match, "init": init})


def _norms_and_biases() -> list[Rule]:
    # Norm layers start as plain normalization (scale 1, shift 0) and biases at 0: the convention of
    # every framework's defaults (torch _NormBase.reset_parameters, Keras, Flax).
    return [
        _rule({"scheme": "zeros"}, role="bias"),
        *(_rule({"scheme": "ones"}, type=t, role="weight") for t in NORM_TYPES),
    ]


def _weights(init: dict[str, Any], types: tuple[str, ...] = MATRIX_TYPES) -> list[Rule]:
    return [_rule(init, type=t, role="weight") for t in types]


# Every layer type torch_default knows; raw parameters have no torch default and stay the user's call.
TORCH_DEFAULT_TYPES = (*MATRIX_TYPES, "embedding", "rnn", "lstm", "gru", *NORM_TYPES)


def _preset(name: str, description: str, rules: list[Rule], base: bool = True) -> None:
    # Under each recipe lies torch's default, so a layer the recipe does not address (an LSTM in a
    # GPT-2 recipe) starts as torch would start it rather than being refused.
    if base:
        rules = [*(_rule({"scheme": "torch_default"}, type=t) for t in TORCH_DEFAULT_TYPES), *rules]
        description += " Layers the recipe does not address keep torch's default."
    register_preset(Preset(name=name, version=1, description=description, rules=rules))


_EMBED = _rule({"scheme": "normal"}, type="embedding", role="weight")
_SMALL = {"scheme": "normal", "std": 0.02}

_preset(
    "kaiming-relu",
    "He et al. (2015) for ReLU networks: linear and conv weights kaiming_normal (fan_in, relu gain), "
    "biases 0, norm weights 1, embeddings N(0, 1).",
    [*_weights({"scheme": "kaiming_normal", "nonlinearity": "relu"}, ("linear", "conv1d", "conv2d", "conv3d")),
     _EMBED, *_norms_and_biases()],
)  # fmt: skip
_preset(
    "xavier",
    "Glorot and Bengio (2010) for tanh, sigmoid or linear networks: linear and conv weights xavier_uniform, "
    "biases 0, norm weights 1, embeddings N(0, 1).",
    [*_weights({"scheme": "xavier_uniform"}, ("linear", "conv1d", "conv2d", "conv3d")), _EMBED, *_norms_and_biases()],
)
_preset(
    "torch-default",
    "Exactly what freshly constructed torch modules draw (reset_parameters): Linear/Conv U(+-1/sqrt(fan_in)), "
    "Embedding N(0, 1), RNNs U(+-1/sqrt(hidden)), attention xavier, norms 1 and 0.",
    [_rule({"scheme": "torch_default"}, type=t) for t in TORCH_DEFAULT_TYPES],
    base=False,
)
_preset(
    "keras-default",
    "Keras 3's layer defaults: kernels glorot_uniform, recurrent kernels orthogonal, biases 0 with the LSTM "
    "forget-gate bias 1 (unit_forget_bias; on bias_ih, since torch adds two biases), embeddings U(-0.05, 0.05), "
    "norms 1 and 0.",
    [*_weights({"scheme": "xavier_uniform"}, (*MATRIX_TYPES, "rnn", "lstm", "gru")),
     _rule({"scheme": "uniform", "a": -0.05, "b": 0.05}, type="embedding", role="weight"),
     *_norms_and_biases(),
     _rule({"scheme": "orthogonal"}, role="recurrent", name="*weight_hh*"),
     _rule({"scheme": "ones"}, type="lstm", role="forget", name="*bias_ih*")],
)  # fmt: skip
_preset(
    "flax-default",
    "Flax linen's defaults: Dense and Conv kernels lecun_normal (truncated, variance 1/fan_in), biases 0, "
    "Embed variance_scaling(1, fan_in, truncated normal), recurrent kernels orthogonal, norms 1 and 0.",
    [*_weights({"scheme": "lecun_normal"}, (*MATRIX_TYPES, "rnn", "lstm", "gru")),
     _rule({"scheme": "variance_scaling"}, type="embedding", role="weight"),
     *_norms_and_biases(),
     _rule({"scheme": "orthogonal"}, role="recurrent", name="*weight_hh*")],
)  # fmt: skip
_preset(
    "gpt2",
    "GPT-2 as Hugging Face and nanoGPT initialize it: weights and embeddings N(0, 0.02^2), biases 0, "
    "LayerNorm 1 and 0, residual output projections N(0, (0.02 / sqrt(2 n_layer))^2).",
    [*_weights(_SMALL), _rule(_SMALL, type="embedding", role="weight"), _rule(_SMALL, type="parameter"),
     *_norms_and_biases(), _rule({"scheme": "scaled_normal"}, role="residual_output", name="*weight"),
     # nanoGPT's and HF's own test: every c_proj.weight (attention and MLP output projections).
     _rule({"scheme": "scaled_normal"}, name="*c_proj.weight")],
)  # fmt: skip
_preset(
    "llama",
    "Llama as Hugging Face initializes it (initializer_range 0.02): weights and embeddings N(0, 0.02^2), "
    "biases 0, RMSNorm 1.",
    [*_weights(_SMALL), _rule(_SMALL, type="embedding", role="weight"), *_norms_and_biases()],
)
_preset(
    "bert",
    "BERT as Hugging Face initializes it: weights and embeddings N(0, 0.02^2), biases 0, LayerNorm 1 and 0.",
    [*_weights(_SMALL), _rule(_SMALL, type="embedding", role="weight"), _rule(_SMALL, type="parameter"),
     *_norms_and_biases()],
)  # fmt: skip
_preset(
    "resnet-kaiming",
    "torchvision's ResNet: convs kaiming_normal (fan_out, relu), batch norms 1 and 0, the classifier the "
    "Linear default U(+-1/sqrt(fan_in)).",
    [_rule({"scheme": "torch_default"}, type="linear"), *_norms_and_biases(),
     *_weights({"scheme": "kaiming_normal", "mode": "fan_out", "nonlinearity": "relu"},
               ("conv1d", "conv2d", "conv3d"))],
)  # fmt: skip
_preset(
    "fixup",
    "Zhang et al. (2019): He init scaled by L^(-1/(2m-2)) in residual branches, each branch's last layer 0, "
    "the classifier (role 'classifier') 0, biases 0, norms 1 and 0; scalar parameters: multipliers (role "
    "'scale') 1, biases 0.",
    [*_weights({"scheme": "fixup"}), *_norms_and_biases(), _rule({"scheme": "fixup"}, type="parameter")],
)
_preset(
    "t-fixup",
    "Huang et al. (2020), encoder stack: Xavier weights scaled by 0.67 N^(-1/4) except query and key, "
    "embeddings N(0, 1/d) scaled by (9 N)^(-1/4), biases 0, norms 1 and 0.",
    [*_weights({"scheme": "t_fixup"}), _rule({"scheme": "t_fixup"}, type="embedding", role="weight"),
     *_norms_and_biases()],
)  # fmt: skip
_preset(
    "mup",
    "Yang et al. (2022), muP around a base width of 256 (override base_fan_in with a rule for your base model): "
    "embeddings N(0, 0.02^2), hidden weights std 0.02 sqrt(256 / fan_in), the classifier 0, biases 0, norms 1 and 0.",
    [*_weights({"scheme": "mup", "base_fan_in": 256}), _rule(_SMALL, type="embedding", role="weight"),
     *_norms_and_biases()],
)  # fmt: skip
_preset(
    "auto",
    "Per tensor from what follows it: relu-like kaiming, tanh and sigmoid xavier, selu lecun_normal, recurrent "
    "weights orthogonal, embeddings and attention small normal, norms 1 and 0, biases 0, LSTM forget bias 1; "
    "the plan records each reason.",
    [_rule({"scheme": "auto"})],
    base=False,
)

# Version 2 of every built-in preset, and the model-family presets added with it.
from initium.schemas import presets_v2  # noqa: E402, F401
