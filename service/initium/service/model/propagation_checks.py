"""Warnings from a probe run: where the signal grows, shrinks, saturates or dies, and what to change."""

from __future__ import annotations

from initium.schemas.report import LayerSignal

SATURATION = 0.3  # share of tanh/sigmoid outputs within 1% of a bound that counts as saturated
DEAD = 0.5  # share of ReLU channels that never fire
_WEIGHTED = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")


def _fix_for(layers: list[LayerSignal]) -> str:
    """The policy change for the nonlinearity the network uses most."""
    kinds = [layer.type for layer in layers]
    if "Tanh" in kinds or "Sigmoid" in kinds:
        return "use xavier_normal with the nonlinearity's gain (tanh: 5/3), or the auto preset"
    if any(k in kinds for k in ("ReLU", "LeakyReLU", "GELU", "SiLU")):
        return 'use kaiming_normal with "nonlinearity": "relu" (He et al. 2015), or the auto preset'
    return "use a variance-preserving scheme (lecun_normal or xavier_normal), or the auto preset"


def _scale_warnings(layers: list[LayerSignal], factor: float, key: str, words: tuple[str, str], fix: str) -> list[str]:
    """The first layer whose std is more than `factor` away from the first layer's, in `words`
    (what growing and shrinking across depth mean for this quantity)."""
    values = [(layer.name, getattr(layer, key)) for layer in layers if getattr(layer, key)]
    if len(values) < 2:
        return []
    first_name, first = values[0]
    for name, value in values[1:]:
        ratio = value / first
        if ratio > factor or ratio < 1 / factor:
            end_name, end = values[-1]
            return [
                f"{words[0] if ratio > 1 else words[1]}: std {first:.3g} at {first_name}, beyond x{factor:g} "
                f"({value:.3g}) first at {name}, {end:.3g} at {end_name}; {fix}"
            ]
    return []


def warnings_for(layers: list[LayerSignal], factor: float, loss: float | None, at_chance: float | None) -> list[str]:
    # Between blocks (a repeat's copies) the residual stream is the depth signal; inside a residual
    # branch a projection may be small on purpose (GPT-2's scaled init). Plain chains compare layers.
    blocks = [layer for layer in layers if layer.type == "block"]
    weighted = blocks if len(blocks) >= 2 else [layer for layer in layers if layer.type in _WEIGHTED]
    fix = _fix_for(layers)
    out = _scale_warnings(
        weighted, factor, "std", ("activations grow across depth", "activations shrink across depth"), fix
    )
    out += _scale_warnings(
        weighted, factor, "grad_std", ("gradients vanish toward the input", "gradients explode toward the input"), fix
    )
    saturated = next((x for x in layers if (x.saturated_fraction or 0) > SATURATION), None)
    if saturated is not None:
        out.append(
            f"{saturated.type} units saturate: {saturated.saturated_fraction:.0%} of {saturated.name}'s outputs are "
            f"within 1% of a bound, where gradients vanish; the weights before it are too large: {_fix_for(layers)}"
        )
    dead = next((x for x in layers if (x.dead_fraction or 0) > DEAD), None)
    if dead is not None:
        out.append(
            f"{dead.dead_fraction:.0%} of {dead.name}'s ReLU channels never fire on the probe; check the scale and "
            "bias of the layer before it (relu_bias gives a small positive bias)"
        )
    if loss is not None and at_chance is not None and abs(loss - at_chance) > max(1.0, 0.5 * at_chance):
        out.append(
            f"the loss at init is {loss:.3g}, far from log(C) = {at_chance:.3g}: the head's logits are too large; "
            "zero or shrink the classifier (role 'classifier' with mup, or a small normal)"
        )
    return out
