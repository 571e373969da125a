"""Walk the module tree in torch's order, naming children as nn.Sequential does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from initium.schemas import spec as s


@dataclass(frozen=True)
class Leaf:
    """A non-container module with its dotted path and its JSON location in the request."""

    path: str
    module: s.Module
    loc: tuple[str | int, ...]


def walk(spec: s.Spec) -> list[Leaf]:
    """Every leaf module in forward order; children are named by `name`, else by their index."""
    return list(_walk(spec.modules, "", ("spec", "modules")))


def _walk(modules: Sequence[s.Module], prefix: str, loc: tuple[str | int, ...]) -> Iterator[Leaf]:
    for index, module in enumerate(modules):
        key = module.name if module.name is not None else str(index)
        path = f"{prefix}{key}"
        here = (*loc, index, module.type)
        if isinstance(module, s.Sequential):
            yield from _walk(module.modules, f"{path}.", (*here, "modules"))
        else:
            yield Leaf(path, module, here)


_PASS_THROUGH = frozenset(
    {"dropout", "flatten", "identity", "layer_norm", "batch_norm1d", "batch_norm2d", "batch_norm3d"}
)


def followed_by(leaves: Sequence[Leaf], index: int) -> s.Module | None:
    """The activation that the output of leaves[index] reaches first, skipping norms, dropout and
    reshapes; None when another weight layer or the end of the network comes first."""
    for leaf in leaves[index + 1 :]:
        kind = leaf.module.type
        if kind in s.ACTIVATION_TYPES and kind != "identity":
            return leaf.module
        if kind not in _PASS_THROUGH:
            return None
    return None


def describe_activation(module: s.Module | None) -> str | None:
    if module is None:
        return None
    if isinstance(module, s.LeakyReLU):
        return f"leaky_relu(negative_slope={module.negative_slope})"
    return module.type
