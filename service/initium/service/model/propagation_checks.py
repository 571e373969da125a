"""Findings from a probe run: where the signal grows, shrinks, saturates or dies, each with the number
that measures it, so a candidate fix is judged by the same numbers (model.advice re-probes them).

[Note: what the depth signal compares] Forward, a layer's output std per element; backward, the
gradient's norm per example (root mean square over the batch of each example's norm), not its std
per element. A weight of variance c / fan_in gives E[y_i^2] = c E[x^2] for every output element,
and E||W^T g||^2 = c ||g||^2 for the gradient: the sum over a layer's units, not each unit, is what
carries through (He et al. 2015, section 2.2: under the forward condition the backward product is
the ratio of the first and last widths, "not a diminishing number"). So a change of width (a 512-wide
layer before a 10-class head) moves the per-element gradient std by sqrt(512 / 10) under a correct
init; the per-example norm moves only by the per-layer factor c times the nonlinearity's, which
compounds with depth (Schoenholz et al. 2017: chi^L, ordered below 1, chaotic above). Glorot and
Bengio (2010, eq. 6-7) asked for both conditions at once and settled for the harmonic compromise,
which they cannot both meet when widths differ; these checks flag what compounds, not the width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from initium.schemas.report import LayerSignal, depth_layers

SATURATION = 0.3  # share of tanh/sigmoid outputs within 1% of a bound that counts as saturated
DEAD = 0.5  # share of ReLU channels that never fire

Kind = Literal["activations", "gradients", "saturation", "dead", "loss"]
SCALE: frozenset[Kind] = frozenset({"activations", "gradients"})


@dataclass(frozen=True)
class Finding:
    """One warning: what it is about, its text, and the number that measures it (larger is worse; the
    warning fires when `measure` passes `limit`)."""

    kind: Kind
    text: str
    measure: float
    limit: float


@dataclass(frozen=True)
class Probed:
    """What the checks read from one probe run."""

    layers: list[LayerSignal]
    loss: float | None
    at_chance: float | None


# Parameter-free averaging over P positions divides the gradient's per-example norm by sqrt(P) (each
# input gets g / P, P of them per output) whatever the init: a CNN's global average pool made every
# correctly initialized CNN read as "gradients vanish" (issue 15). Gradients are compared only
# between such pools, never across one. (Max pooling routes each gradient to one input: norm kept.)
_AVERAGING = ("AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d")


def _segments(layers: list[LayerSignal], kind: Kind) -> list[list[tuple[str, float]]]:
    """The compared layers' values, in runs the value can be compared within (one run, except the
    gradients, split at every averaging pool)."""
    key = "std" if kind == "activations" else "grad_norm"
    compared = {id(layer) for layer in depth_layers(layers)}
    runs: list[list[tuple[str, float]]] = [[]]
    for layer in layers:
        if kind == "gradients" and layer.type in _AVERAGING and runs[-1]:
            runs.append([])
        elif id(layer) in compared and (value := getattr(layer, key)):
            runs[-1].append((layer.name, value))
    return [run for run in runs if run]


def worst_factor(layers: list[LayerSignal], kind: Kind) -> float:
    """The largest factor, either way, between a compared layer's value and the first of its run's
    (1 when no run has two layers carrying the value)."""
    return max((max(v / run[0][1], run[0][1] / v) for run in _segments(layers, kind) for _, v in run[1:]), default=1.0)


_WORDS: dict[Kind, tuple[str, str, str]] = {
    "activations": ("activations grow across depth", "activations shrink across depth", "std"),
    "gradients": ("gradients vanish toward the input", "gradients explode toward the input", "per-example norm"),
}


def _scale(layers: list[LayerSignal], kind: Kind, factor: float) -> Finding | None:
    """The first layer whose value is more than `factor` away from the first layer's of its run."""
    return next((found for run in _segments(layers, kind) if (found := _scale_run(run, layers, kind, factor))), None)


def _scale_run(values: list[tuple[str, float]], layers: list[LayerSignal], kind: Kind, factor: float) -> Finding | None:
    if len(values) < 2:
        return None
    (first_name, first), (end_name, end) = values[0], values[-1]
    grow, shrink, quantity = _WORDS[kind]
    for name, value in values[1:]:
        ratio = value / first
        if ratio > factor or ratio < 1 / factor:
            text = (
                f"{grow if ratio > 1 else shrink}: {quantity} {first:.3g} at {first_name}, beyond x{factor:g} "
                f"({value:.3g}) first at {name}, {end:.3g} at {end_name}"
            )
            return Finding(kind, text, worst_factor(layers, kind), factor)
    return None


def _share(layers: list[LayerSignal], kind: Kind, field: str, limit: float,
           text: Callable[[LayerSignal, float], str]) -> Finding | None:  # fmt: skip
    """A finding for the first layer whose `field` (a share of its units) passes `limit`, measured by
    the worst share of any layer; `text` words it from that first layer and its share."""
    first = next((x for x in layers if (getattr(x, field) or 0.0) > limit), None)
    if first is None:
        return None
    worst = max(getattr(x, field) or 0.0 for x in layers)
    return Finding(kind, text(first, getattr(first, field)), worst, limit)


def _saturation(layers: list[LayerSignal]) -> Finding | None:
    return _share(layers, "saturation", "saturated_fraction", SATURATION, lambda first, share: (
        f"{first.type} units saturate: {share:.0%} of {first.name}'s outputs are within 1% of a bound, where "
        "gradients vanish; the weights before it are too large"
    ))  # fmt: skip


def _dead(layers: list[LayerSignal]) -> Finding | None:
    return _share(layers, "dead", "dead_fraction", DEAD, lambda first, share: (
        f"{share:.0%} of {first.name}'s ReLU channels never fire on the probe; the scale or bias of the layer "
        "before it pushes them below 0"
    ))  # fmt: skip


def _loss(loss: float | None, at_chance: float | None) -> Finding | None:
    if loss is None or at_chance is None:
        return None
    gap, limit = abs(loss - at_chance), max(1.0, 0.5 * at_chance)
    if gap <= limit:
        return None
    text = f"the loss at init is {loss:.3g}, far from log(C) = {at_chance:.3g}: the head's logits are too large"
    return Finding("loss", text, gap, limit)


def measure(probed: Probed, kind: Kind) -> float:
    """The number a finding of `kind` is judged by, whether or not it fires."""
    if kind in SCALE:
        return worst_factor(probed.layers, kind)
    if kind == "saturation":
        return max((x.saturated_fraction or 0.0 for x in probed.layers), default=0.0)
    if kind == "dead":
        return max((x.dead_fraction or 0.0 for x in probed.layers), default=0.0)
    if probed.loss is None or probed.at_chance is None:
        return 0.0
    return abs(probed.loss - probed.at_chance)


def findings(probed: Probed, factor: float) -> list[Finding]:
    """Every warning the probe run raises, in the order a reader should see them."""
    found = [
        _scale(probed.layers, "activations", factor),
        _scale(probed.layers, "gradients", factor),
        _saturation(probed.layers),
        _dead(probed.layers),
        _loss(probed.loss, probed.at_chance),
    ]
    return [f for f in found if f is not None]


def warnings_for(layers: list[LayerSignal], factor: float, loss: float | None, at_chance: float | None) -> list[str]:
    """The findings' texts: what is wrong, without a fix (model.advice adds the fixes it verified)."""
    return [f.text for f in findings(Probed(layers, loss, at_chance), factor)]
