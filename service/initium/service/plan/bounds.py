"""A request's size, counted from the spec before anything is planned; planning's deadline; and the
cyclic garbage collector held off while a plan is built.

Planning costs time and memory per tensor, and a repeat multiplies a few bytes of request into
many tensors (issue 16: a 300-byte request asked for 200,000 tensors, took 74 s to plan and 1.3 GB
of the API's memory). So the counts are taken from the tree as sent, each module visited once and a
repeat's block counted once times its copies, and checked against the server's limits before one
tensor is built; what is left is bounded by a deadline checked in the planner's loops.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from initium.schemas import spec as s
from initium.schemas.spec import Manifest, Spec
from initium.service.errors import LimitExceededError
from initium.service.plan.composite import expand, is_composite
from initium.service.plan.layers import get_layer
from initium.service.plan.limits import Limits

T = TypeVar("T")


@dataclass(frozen=True)
class Size:
    """What a module holds: tensors, the bytes of their names after the module's own path (the
    names are ASCII: the schemas' patterns), and modules as torch counts them (a repeat is a
    container of its copies)."""

    tensors: int = 0
    name_bytes: int = 0
    modules: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(self.tensors + other.tensors, self.name_bytes + other.name_bytes, self.modules + other.modules)

    def under(self, prefix: int) -> Size:
        """The same tensors seen from a parent whose path adds `prefix` characters to their names."""
        return Size(self.tensors, self.name_bytes + self.tensors * prefix, self.modules)


def spec_size(spec: Spec | Manifest, limits: Limits) -> Size:
    """The tensors, name bytes and modules `spec` plans into, exactly (tree.walk's and
    resolve.tensor_name's naming), without building them; raises LimitExceededError for nesting past
    limits.max_depth (checked on the way down, so the recursion is bounded by it)."""
    if isinstance(spec, Manifest):
        return Size(len(spec.tensors), sum(len(t.name) for t in spec.tensors))  # a manifest names no modules
    return _children(spec.modules, 0, 1, limits)


def check_size(spec: Spec | Manifest, limits: Limits) -> Size:
    """spec_size, refusing (413) a spec past the server's tensor, name or module limits."""
    size = spec_size(spec, limits)
    _refuse_over(
        size.tensors,
        limits.max_tensors,
        "tensors",
        "INITIUM_MAX_TENSORS",
        "plan the model in parts (one request per block of layers)",
    )
    _refuse_over(
        size.name_bytes,
        limits.max_name_bytes,
        "bytes of tensor names",
        "INITIUM_MAX_NAME_BYTES",
        "give the modules shorter names",
    )
    _refuse_over(size.modules, limits.max_modules, "modules (repeats counted per copy)", "INITIUM_MAX_MODULES",
                 "plan the model in parts")  # fmt: skip
    return size


def _refuse_over(value: int, limit: int, what: str, variable: str, fix: str) -> None:
    if value > limit:
        raise LimitExceededError(
            f"the spec has {value:,} {what}; this server allows at most {limit:,} ({variable}): {fix}, "
            "or ask the operator to raise the limit",
            ("spec",),
        )


def _children(modules: Sequence[s.Module], prefix: int, depth: int, limits: Limits) -> Size:
    """Children named by `name`, else their index, `prefix` characters below their parent's path."""
    total = Size()
    for index, module in enumerate(modules):
        key = module.name if module.name is not None else str(index)
        total += _module(module, depth, limits).under(prefix + len(key))
    return total


def _module(module: s.Module, depth: int, limits: Limits) -> Size:
    if depth > limits.max_depth:
        raise LimitExceededError(
            f"the spec nests modules {depth} deep; this server allows {limits.max_depth} (INITIUM_MAX_DEPTH)",
            ("spec",),
        )
    if isinstance(module, s.Sequential):
        return Size(modules=1) + _children(module.modules, 1, depth + 1, limits)
    if isinstance(module, s.Repeat):
        block = _module(module.block, depth + 1, limits)
        # copy k is named "<path>.<k>": one dot and the digits of k, for k in 0 .. count-1
        names = module.count * block.name_bytes + block.tensors * (module.count + _digits_below(module.count))
        return Size(module.count * block.tensors, names, 1 + module.count * block.modules)
    if is_composite(module.type):
        parts = [_leaf(child.module).under(1 + len(child.path)) for child in expand(module)]
        return sum(parts, Size(modules=1))
    if isinstance(module, s.Residual):
        body = _children(module.body, len(".body."), depth + 1, limits)
        return Size(modules=1) + body + _children(module.shortcut or [], len(".shortcut."), depth + 1, limits)
    return _leaf(module)


def _leaf(module: s.Module) -> Size:
    """A layer's own tensors, named "<path>.<local name>" (a local name '' is the layer's path)."""
    local = [t.local_name for t in get_layer(module.type)(module)]
    return Size(len(local), sum(len(name) + 1 for name in local if name), 1)


def _digits_below(n: int) -> int:
    """Total decimal digits of 0, 1, ..., n-1."""
    total, low, width = 0, 0, 1
    while low < n:
        high = min(n, 10**width)
        total += (high - low) * width
        low, width = high, width + 1
    return total


class Deadline:
    """Planning's time bound (Limits.max_plan_seconds, INITIUM_MAX_PLAN_SECONDS): the planner's
    loops pass their items through `each`, which raises LimitExceededError (413) once it is past."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise LimitExceededError(
                f"planning this spec took longer than {self.seconds:g} s, this server's bound "
                "(INITIUM_MAX_PLAN_SECONDS): plan the model in parts, or ask the operator to raise it",
                ("spec",),
            )

    def each(self, items: Iterable[T], every: int = 256) -> Iterator[T]:
        """`items`, checking the clock every `every` of them (a clock read per item costs more)."""
        for count, item in enumerate(items):
            if count % every == 0:
                self.check()
            yield item


_paused = 0
_was_enabled = True
_paused_lock = threading.Lock()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while one or more plans are built (process-wide,
    counted, so overlapping plans in threads re-enable it only when the last one ends).

    Why: a plan is hundreds of thousands of live objects, and each full collection traverses all of
    them while holding the GIL. Measured (issue 16; 100,000 tensors, this project's 2-core machine):
    12 full collections of up to 2.1 s each, 7.8 s of a 23 s plan, during which the API's event loop
    answered nothing (/healthz stalled). The plan's objects (pydantic models, lists, strings) hold no
    reference cycles, so reference counting frees them without the collector; what the pause delays
    is only the freeing of other cyclic garbage, for at most INITIUM_MAX_PLAN_SECONDS.
    """
    global _paused, _was_enabled
    with _paused_lock:
        _paused += 1
        if _paused == 1:
            _was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()
