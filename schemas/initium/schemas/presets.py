"""Named, versioned policies: a registry of rule lists that any request can start from."""

from __future__ import annotations

from initium.schemas._base import WireModel
from initium.schemas.policy import Match, Rule
from initium.schemas.schemes import KaimingNormal, Normal, Ones, XavierUniform, Zeros


class Preset(WireModel):
    """A published policy; a (name, version) pair never changes its rules."""

    name: str
    version: int
    description: str
    rules: list[Rule]


class UnknownPresetError(LookupError):
    """The policy named a preset (or version) that is not registered."""


_PRESETS: dict[tuple[str, int], Preset] = {}


def register_preset(preset: Preset) -> Preset:
    key = (preset.name, preset.version)
    if key in _PRESETS:
        raise ValueError(f"preset {preset.name}@{preset.version} is already registered")
    _PRESETS[key] = preset
    return preset


def list_presets() -> list[Preset]:
    return sorted(_PRESETS.values(), key=lambda p: (p.name, p.version))


def get_preset(ref: str) -> Preset:
    """Resolve 'name' (newest version) or 'name@version'."""
    name, _, version = ref.partition("@")
    versions = sorted(v for (n, v) in _PRESETS if n == name)
    if not versions:
        known = ", ".join(sorted({n for n, _ in _PRESETS}))
        raise UnknownPresetError(f"unknown preset {name!r}; known presets: {known}")
    wanted = int(version) if version else versions[-1]
    if wanted not in versions:
        raise UnknownPresetError(f"preset {name!r} has no version {wanted}; versions: {versions}")
    return _PRESETS[(name, wanted)]


def _norm_and_bias_rules() -> list[Rule]:
    # Norm layers start as the identity map (gamma 1, beta 0) and biases at 0: the convention
    # of every framework's defaults (torch _NormBase.reset_parameters, Keras, Flax).
    norm_types = ("layer_norm", "batch_norm1d", "batch_norm2d", "batch_norm3d")
    return [
        Rule(match=Match(role="bias"), init=Zeros(scheme="zeros")),
        *(Rule(match=Match(type=t, role="weight"), init=Ones(scheme="ones")) for t in norm_types),
    ]


def _weight_rules(init: KaimingNormal | XavierUniform) -> list[Rule]:
    layer_types = ("linear", "conv1d", "conv2d", "conv3d")
    return [Rule(match=Match(type=t, role="weight"), init=init) for t in layer_types]


_EMBEDDING = Rule(match=Match(type="embedding", role="weight"), init=Normal(scheme="normal"))

register_preset(
    Preset(
        name="kaiming-relu",
        version=1,
        description=(
            "He et al. (2015) for ReLU networks: linear and conv weights kaiming_normal "
            "(fan_in, relu gain), biases 0, norm weights 1, embeddings N(0, 1) as torch draws them."
        ),
        rules=[
            *_weight_rules(KaimingNormal(scheme="kaiming_normal", nonlinearity="relu")),
            _EMBEDDING,
            *_norm_and_bias_rules(),
        ],
    )
)
register_preset(
    Preset(
        name="xavier",
        version=1,
        description=(
            "Glorot and Bengio (2010) for tanh/sigmoid or linear networks: linear and conv weights "
            "xavier_uniform, biases 0, norm weights 1, embeddings N(0, 1)."
        ),
        rules=[
            *_weight_rules(XavierUniform(scheme="xavier_uniform")),
            _EMBEDDING,
            *_norm_and_bias_rules(),
        ],
    )
)
