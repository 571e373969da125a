"""Published presets: platform teams' policies, persisted beside the job store and immutable.

    <data_dir>/presets/<name>@<version>.json

Publishing writes a temporary file and hard-links it into place, which fails if the name and
version exist already, so two concurrent publishers cannot both win. Republishing identical rules is
a no-op; different rules under an existing version are refused: a version never changes meaning,
so request ids that pinned it stay valid. Built-in names are reserved.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from initium.schemas.presets import Preset, UnknownPresetError, builtin_presets, resolve_ref
from initium.service.errors import ConflictError, PresetNotFoundError, RequestInvalidError


class PresetStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "presets"
        self.dir.mkdir(parents=True, exist_ok=True)

    def published(self) -> list[Preset]:
        presets = [Preset.model_validate_json(p.read_bytes()) for p in self.dir.glob("*@*.json")]
        return sorted(presets, key=lambda p: (p.name, p.version))

    def all(self) -> dict[tuple[str, int], Preset]:
        known = builtin_presets()
        known.update({(p.name, p.version): p for p in self.published()})
        return known

    def get(self, ref: str) -> Preset:
        """The preset a request's policy names; RequestInvalidError (422 at `preset`) when none is."""
        try:
            return resolve_ref(ref, self.all())
        except UnknownPresetError as exc:
            raise RequestInvalidError(str(exc), ("preset",)) from None

    def lookup(self, ref: str) -> Preset:
        """The preset at its address (GET /v1/presets/{ref}); PresetNotFoundError (404) when none is."""
        try:
            return resolve_ref(ref, self.all())
        except UnknownPresetError as exc:
            raise PresetNotFoundError(str(exc)) from None

    def publish(self, preset: Preset) -> tuple[Preset, bool]:
        """Persist `preset`; (preset, True) when new, (existing, False) when identical rules exist."""
        if any(name == preset.name for name, _ in builtin_presets()):
            raise ConflictError(f"{preset.name!r} is a built-in preset; publish under another name", ("name",))
        path = self.dir / f"{preset.ref}.json"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".publish-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(preset.model_dump_json(indent=1).encode())
            os.link(tmp, path)
            return preset, True
        except FileExistsError:
            existing = Preset.model_validate_json(path.read_bytes())
            if existing.model_dump() == preset.model_dump():
                return existing, False
            raise ConflictError(
                f"{preset.ref} is published with other content and versions are immutable; publish it as "
                f"{preset.name}@{self._next_version(preset.name)}",
                ("version",),
            ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _next_version(self, name: str) -> int:
        return max((v for n, v in self.all() if n == name), default=0) + 1
