"""One registry pattern for every extension point: a dict plus register, get and names.

It lives in schemas (pure Python) so that every distribution can use it: the presets and the dtype
table here, the planner, samplers and model builder in the service, the module mapping in the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(LookupError):
    """A name that no registry entry has; the message lists the valid names."""


class Registry(Generic[T]):
    """Name -> entry, in registration order. A duplicate name is a bug and raises ValueError; an
    unknown name raises UnknownNameError listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator (or a call, `registry.register(name)(entry)`) that adds `entry` under `name`."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
