"""One registry pattern for every extension point: the class lives in initium.schemas.registry, so
that schemas (presets, dtypes) and the client use the same one."""

from __future__ import annotations

from initium.schemas.registry import Registry, UnknownNameError

__all__ = ["Registry", "UnknownNameError"]
