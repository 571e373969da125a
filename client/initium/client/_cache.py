"""The client's download cache: finished artifacts kept by content, so asking again costs a stat.

A request's id is the sha256 of its normalized form and the same request always gives the same
bytes, so a verified download can be reused for as long as it is intact. `initialize()` without a
path downloads into `<cache>/<sha256 of the main file>/` (the safetensors file, or a sharded
output's index beside its shards) and returns the path there, as huggingface_hub's
`hf_hub_download` returns a path in its cache; with a path, an intact cached copy is copied there
instead of downloaded again.

A download to the caller's own path is hard-linked into the cache when the two share a filesystem.
"Intact" is checked without re-hashing: next to each file a stamp records its sha256 and the
(size, mtime_ns, inode) it had once verified. Any write through the path changes the stamp's
figures, and such an entry is downloaded again instead of served. Nothing is evicted on its own
(as with huggingface_hub): `initium cache prune` removes what only the cache still holds, the cache
is plain files (`rm -r` is safe at any time), and `INITIUM_CACHE_DIR=off` or
`Client(cache_dir=False)` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from initium.client._fetch import Fetch

CACHE_ENV = "INITIUM_CACHE_DIR"
_OFF = ("", "0", "off", "false", "no", "none")


def default_cache_dir() -> Path | None:
    """$INITIUM_CACHE_DIR ("off" disables), else $XDG_CACHE_HOME/initium/artifacts, else ~/.cache/..."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "initium" / "artifacts"


class DownloadCache:
    """Verified files under `root/<main sha256>/<name>`, each with a `.<name>.stamp` beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, main_sha256: str) -> Path | None:
        """The artifact's folder in the cache, created; None when the cache cannot take it (then the
        caller uses a temporary directory, as with no cache)."""
        folder = self.root / main_sha256
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return folder

    def reuse(self, fetch: Fetch) -> bool:
        """Whether the fetch's target now holds its file: it is the intact cache entry, or a copy of it."""
        cached, sha256, target = fetch.cached, fetch.sha256, fetch.target
        if cached is None or not self._intact(cached, sha256):
            return False
        if target != cached:
            partial = _partial(target)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cached, partial)  # copy_file_range/sendfile: the kernel copies, no hashing
                partial.replace(target)
            except OSError:  # a full or read-only disk: the download path says so with its own error
                _discard(partial)
                return False
        return True

    def remember(self, fetch: Fetch) -> None:
        """Keep a file just downloaded and verified: stamp it where it is in the cache, or hard-link the
        caller's file into the cache (no second copy on disk; on another filesystem, nothing is kept).
        The link shares the caller's inode, so a later write through their path changes the stamp's
        figures and drops the entry; their file itself is never linked anywhere else."""
        path = fetch.cached
        if path is None:
            return
        link, stamp_partial = _partial(path), _partial(self._stamp(path))
        try:  # best effort: the caller's verified file is already in place whatever happens here
            if path != fetch.target:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(fetch.target, link)
                link.replace(path)  # (a no-op, leaving `link`, if both already name one file)
            st = path.stat()
            stamp = {"sha256": fetch.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
            stamp_partial.write_text(json.dumps(stamp))
            stamp_partial.replace(self._stamp(path))
        except OSError:
            _discard(stamp_partial)
        _discard(link)

    def usage(self) -> tuple[int, int, int]:
        """(files, bytes, bytes only the cache holds): a file hard-linked from a caller's path costs
        no disk of its own until that path is removed."""
        files = [p for p in self.root.glob("*/*") if not p.name.startswith(".") and p.is_file()]
        sizes = [(p.stat().st_size, p.stat().st_nlink) for p in files]
        return len(files), sum(size for size, _ in sizes), sum(size for size, links in sizes if links == 1)

    def prune(self, everything: bool = False) -> tuple[int, int]:
        """Remove the files only the cache holds (or all of them): (files removed, bytes freed)."""
        removed = freed = 0
        for path in [p for p in self.root.glob("*/*") if not p.name.startswith(".") and p.is_file()]:
            st = path.stat()
            if everything or st.st_nlink == 1:
                _discard(self._stamp(path))
                _discard(path)
                removed, freed = removed + 1, freed + (st.st_size if st.st_nlink == 1 else 0)
        for folder in self.root.glob("*"):
            with contextlib.suppress(OSError):
                for leftover in folder.glob(".*.partial"):
                    leftover.unlink()
                folder.rmdir()  # only when empty
        return removed, freed

    def _intact(self, path: Path, sha256: str) -> bool:
        try:
            st = path.stat()
            stamp = json.loads(self._stamp(path).read_text())
        except (OSError, ValueError):
            return False
        figures = (sha256, st.st_size, st.st_mtime_ns, st.st_ino)
        if not isinstance(stamp, dict) or figures != tuple(stamp.get(k) for k in ("sha256", "size", "mtime_ns", "ino")):
            _discard(self._stamp(path))  # changed since it was verified: download it again
            return False
        return True

    @staticmethod
    def _stamp(path: Path) -> Path:
        return path.with_name(f".{path.name}.stamp")


def _partial(path: Path) -> Path:
    """A temporary name beside `path`, unique per process and call (clients may share a cache)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
