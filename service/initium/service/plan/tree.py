"""Walk the module tree in torch's order, naming children as nn.Sequential does."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from initium.schemas import spec as s
from initium.schemas._module import NORM_TYPES
from initium.service.plan.composite import expand, is_composite


@dataclass(frozen=True)
class Leaf:
    """A non-container module with its dotted path, its JSON location in the request, and where it
    sits: the innermost residual branch holding it and its copy index in the innermost repeat.
    A manifest tensor's leaf has no spec module: `kind` and `extra_roles` say what it belongs to."""

    path: str
    module: s.Module | None
    loc: tuple[str | int, ...]
    residual: str | None = None
    depth: int | None = None
    repeats: int | None = None  # the innermost repeat's count: how many blocks `depth` counts
    kind: str | None = None
    extra_roles: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return self.kind if self.module is None else self.module.type  # type: ignore[return-value]

    @property
    def roles(self) -> tuple[str, ...]:
        return self.extra_roles if self.module is None else tuple(self.module.roles)


@dataclass(frozen=True)
class _Context:
    residual: str | None = None
    depth: int | None = None
    repeats: int | None = None


def walk(spec: s.Spec) -> list[Leaf]:
    """Every leaf module in forward order; children are named by `name`, else by their index;
    a repeat's copies are 0 .. count-1; a residual's children are `body` and `shortcut`."""
    return list(_walk(spec.modules, "", ("spec", "modules"), _Context()))


def _walk(modules: Sequence[s.Module], prefix: str, loc: tuple[str | int, ...], ctx: _Context) -> Iterator[Leaf]:
    for index, module in enumerate(modules):
        key = module.name if module.name is not None else str(index)
        yield from _visit(module, f"{prefix}{key}", (*loc, index, module.type), ctx)


def _visit(module: s.Module, path: str, here: tuple[str | int, ...], ctx: _Context) -> Iterator[Leaf]:
    if isinstance(module, s.Sequential):
        yield from _walk(module.modules, f"{path}.", (*here, "modules"), ctx)
    elif isinstance(module, s.Repeat):
        for copy in range(module.count):
            yield from _visit(
                module.block, f"{path}.{copy}", (*here, "block"), _Context(ctx.residual, copy, module.count)
            )
    elif is_composite(module.type):
        for child in expand(module):
            branch = ctx.residual if child.branch is None else f"{path}.{child.branch}"
            yield Leaf(f"{path}.{child.path}", child.module, here, branch, ctx.depth, ctx.repeats)
    elif isinstance(module, s.Residual):
        yield from _walk(module.body, f"{path}.body.", (*here, "body"), _Context(path, ctx.depth, ctx.repeats))
        if module.shortcut:
            yield from _walk(module.shortcut, f"{path}.shortcut.", (*here, "shortcut"), ctx)
    else:
        yield Leaf(path, module, here, ctx.residual, ctx.depth, ctx.repeats)


# Pooling passes too: max pooling commutes with every monotone activation (relu(max(x)) = max(relu(x)))
# and average pooling is linear, so the activation after a pool is the one the layer's outputs reach.
_PASS_THROUGH = frozenset({"dropout", "flatten", "identity", *NORM_TYPES, *s.POOLING_TYPES})


def followed_by(leaves: Sequence[Leaf], index: int) -> s.Module | None:
    """The activation that the output of leaves[index] reaches first, skipping norms, dropout and
    reshapes; None when another weight layer or the end of the network comes first."""
    # By index, not a slice: a slice copies the rest of the list on every call, which made planning
    # quadratic in the number of leaves (issue 16: 200,000 tensors planned in 39-67 s, 20 s without it).
    for after in range(index + 1, len(leaves)):
        leaf = leaves[after]
        kind = leaf.type
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
