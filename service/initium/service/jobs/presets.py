"""Published presets: platform teams' policies, persisted beside the job store and immutable.

    <data_dir>/presets/<name>@<version>.json

Publishing writes a temporary file and hard-links it into place, which fails if the name and
version exist already, so two concurrent publishers cannot both win. Republishing identical rules is
a no-op; different rules under an existing version are refused: a version never changes meaning,
so request ids that pinned it stay valid. Built-in names are reserved. A published preset holds at
most `max_rules` rules (INITIUM_MAX_PRESET_RULES); its version is below 2^31 (the schema's rule).

Since a published file never changes, each is parsed once per process (issue 16: every request
re-read every preset, and 30 presets of 10,000 rules made planning the README MLP take 15 s). The
directory is listed on every read, which costs microseconds and sees what another API process
sharing it published since; only file names not seen before are parsed. (Its mtime alone would
miss a publish within the file system's timestamp granularity.)
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path

from pydantic import ValidationError

from initium.schemas.catalog import PresetList
from initium.schemas.presets import Preset, UnknownPresetError, builtin_presets, resolve_ref
from initium.service.errors import (
    ConflictError,
    LimitExceededError,
    PresetNotFoundError,
    RequestInvalidError,
    volume_full_as_507,
)

log = logging.getLogger("initium.presets")

_CANONICAL_VERSION = re.compile(r"[1-9][0-9]{0,9}")
MAX_PRESET_RULES = 1_000  # INITIUM_MAX_PRESET_RULES' default
MAX_PUBLISHED_BYTES = 64 * 1024 * 1024  # INITIUM_MAX_PRESETS_BYTES' default: every published preset, together


class PresetStore:
    """The built-in presets and those published under `data_dir`, parsed once each and cached."""

    def __init__(
        self, data_dir: Path, max_rules: int = MAX_PRESET_RULES, max_total_bytes: int = MAX_PUBLISHED_BYTES
    ) -> None:
        self.dir = data_dir / "presets"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_rules, self.max_total_bytes = max_rules, max_total_bytes
        self._lock = threading.Lock()  # FastAPI runs sync routes on a thread pool
        self._files: dict[str, Preset | None] = {}  # file name -> its preset; None: skipped (warned once)
        self._known: dict[tuple[str, int], Preset] = builtin_presets()
        self._catalog: bytes | None = None  # GET /v1/presets' body for the current listing
        self._refresh()  # parse what is published now at startup rather than in the first request

    def published(self) -> list[Preset]:
        """Every published preset that parses, by name then version."""
        with self._lock:
            self._refresh()
            presets = [p for p in self._files.values() if p is not None]
        return sorted(presets, key=lambda p: (p.name, p.version))

    def all(self) -> dict[tuple[str, int], Preset]:
        """(name, version) -> every preset, built-in and published (a copy: callers may keep it)."""
        with self._lock:
            self._refresh()
            return dict(self._known)

    def catalog_json(self) -> bytes:
        """PresetList of every preset by name then version, as JSON; serialized once per listing."""
        with self._lock:
            self._refresh()
            if self._catalog is None:
                presets = sorted(self._known.values(), key=lambda p: (p.name, p.version))
                self._catalog = PresetList(presets=presets).model_dump_json().encode()
            return self._catalog

    def get(self, ref: str) -> Preset:
        """The preset a request's policy names; RequestInvalidError (422 at `preset`) when none is."""
        try:
            return resolve_ref(ref, self.all())
        except UnknownPresetError as exc:
            raise RequestInvalidError(str(exc), ("preset",)) from None

    def lookup(self, ref: str) -> Preset:
        """The preset at its address (GET /v1/presets/{ref}); PresetNotFoundError (404) when none is.
        An address is canonical, 'name' or 'name@N' with N as Location headers write it: 'gpt2@' and
        'gpt2@01' name nothing (one resource, one URL)."""
        name, at, version = ref.partition("@")
        if at and not _CANONICAL_VERSION.fullmatch(version):
            raise PresetNotFoundError(
                f"no preset at {ref[:80]!r}: address a version as {name[:64]}@N (N from 1, no leading zeros), "
                f"or {name[:64]} for the newest"
            )
        try:
            return resolve_ref(ref, self.all())
        except UnknownPresetError as exc:
            raise PresetNotFoundError(str(exc)) from None

    def publish(self, preset: Preset) -> tuple[Preset, bool]:
        """Persist `preset`; (preset, True) when new, (existing, False) when identical rules exist.
        ConflictError (409) for a built-in name or other rules under a published version;
        LimitExceededError (413) for more than `max_rules` rules."""
        if any(name == preset.name for name, _ in builtin_presets()):
            raise ConflictError(f"{preset.name!r} is a built-in preset; publish under another name", ("name",))
        if len(preset.rules) > self.max_rules:
            raise LimitExceededError(
                f"a preset holds at most {self.max_rules} rules (INITIUM_MAX_PRESET_RULES) and this one has "
                f"{len(preset.rules)}: merge rules (a name glob matches many tensors) or raise the limit",
                ("rules",),
            )
        path = self.dir / f"{preset.ref}.json"
        body = preset.model_dump_json(indent=1).encode()
        if not path.exists():
            self._check_room(preset.ref, len(body))
        # A full volume is a 507 that leaves nothing behind (the temporary file goes in `finally`).
        with volume_full_as_507(f"the preset {preset.ref}"):
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".publish-", suffix=".tmp")
        try:
            with volume_full_as_507(f"the preset {preset.ref}"):
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
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

    def _check_room(self, ref: str, nbytes: int) -> None:
        """LimitExceededError (413) when `nbytes` more would take the published presets past
        max_total_bytes: every request's planning and GET /v1/presets read them all (round two of issue
        16: 60 presets within the rule bound made a 68 MB listing)."""
        used = sum(entry.stat().st_size for entry in os.scandir(self.dir) if entry.name.endswith(".json"))
        if used + nbytes > self.max_total_bytes:
            raise LimitExceededError(
                f"publishing {ref} ({nbytes:,} bytes) would take the published presets to {used + nbytes:,} bytes; "
                f"this server keeps at most {self.max_total_bytes:,} (INITIUM_MAX_PRESETS_BYTES): publish fewer or "
                "smaller presets (a name glob matches many tensors), or raise the limit",
                ("rules",),
            )

    def _next_version(self, name: str) -> int:
        return max((v for n, v in self.all() if n == name), default=0) + 1

    def _refresh(self) -> None:
        """Bring the cache up to the directory's listing (under the lock): parse new files, drop gone ones."""
        listing = {e.name for e in os.scandir(self.dir) if e.name.endswith(".json") and not e.name.startswith(".")}
        if listing == self._files.keys():
            return
        files = {name: self._files[name] for name in listing & self._files.keys()}
        for name in sorted(listing - self._files.keys()):
            files[name] = self._load(name)
        self._files = files
        self._known = builtin_presets() | {(p.name, p.version): p for p in files.values() if p is not None}
        self._catalog = None

    def _load(self, name: str) -> Preset | None:
        """The preset in file `name`, or None (logged once) when it does not parse under today's schema
        (e.g. a version published before versions were bounded) or is not stored under its own ref."""
        try:
            preset = Preset.model_validate_json((self.dir / name).read_bytes())
        except (OSError, ValidationError) as exc:
            reason = _first_error(exc) if isinstance(exc, ValidationError) else type(exc).__name__
            log.warning("skipping published preset %s: it does not load (%s)", name, reason)
            return None
        if name != f"{preset.ref}.json":
            log.warning("skipping published preset %s: it holds %s", name, preset.ref)
            return None
        return preset


def _first_error(exc: ValidationError) -> str:
    """Where and why the schema refuses a file, e.g. 'version: Input should be less than or equal to 2147483647'."""
    error = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(map(str, error['loc'])) or 'the file'}: {error['msg']}"
