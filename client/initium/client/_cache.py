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
figures, and such an entry is downloaded again instead of served.

The cache is capped (issue 18 item 5; huggingface_hub leaves its cache to grow, and its users ask
for exactly this): after each `remember`, the least recently used entries (an entry is one
`<sha256>/` folder; used = remembered or reused, the time kept as its stamps' mtime, which a reuse
sets, so filesystem atime and noatime mounts play no part) are evicted until the bytes only the
cache holds are at most `INITIUM_CACHE_MAX_BYTES` (default 10 GB; `Client(cache_max_bytes=...)`;
0 or "none" for no cap). A file hard-linked from a caller's path costs no disk of its own, so it
is neither counted nor evicted. Never evicted: the entry just remembered, and a file some client is
still writing (a `.partial`, or a file not yet stamped). `initium cache prune` removes everything
only the cache holds, the cache is plain files (`rm -r` is safe at any time), and
`INITIUM_CACHE_DIR=off` or `Client(cache_dir=False)` turns it off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from initium.client._fetch import Fetch

CACHE_ENV = "INITIUM_CACHE_DIR"
CACHE_MAX_ENV = "INITIUM_CACHE_MAX_BYTES"
DEFAULT_CACHE_MAX_BYTES = 10_000_000_000  # 10 GB (issue 18 item 5)
_OFF = ("", "0", "off", "false", "no", "none")
_SIZE = re.compile(r"(\d+(?:_\d+)*)\s*(|b|kb|mb|gb|tb|kib|mib|gib|tib)")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def default_cache_dir() -> Path | None:
    """$INITIUM_CACHE_DIR ("off" disables), else $XDG_CACHE_HOME/initium/artifacts, else ~/.cache/..."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "initium" / "artifacts"


def resolve_cache_max_bytes(value: int | str | None = None) -> int | None:
    """The cache's cap in bytes: `value` (the clients' `cache_max_bytes`), else $INITIUM_CACHE_MAX_BYTES,
    else DEFAULT_CACHE_MAX_BYTES; None (no cap) for 0 or "none"/"off". A string may carry a unit:
    "10GB" (10**9), "500MiB" (2**20); underscores group digits. ValueError names the setting and the
    accepted forms."""
    source = "cache_max_bytes"
    if value is None:
        source, value = CACHE_MAX_ENV, os.environ.get(CACHE_MAX_ENV) or DEFAULT_CACHE_MAX_BYTES  # "" = unset
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value or None
    text = value.strip().lower() if isinstance(value, str) else "-"
    if text in _OFF:
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{source}={value!r} is not a size: give bytes (10000000000), a size with a unit "
            '(10GB, 500MiB), or 0 / "none" for no cap'
        )
    return int(match[1]) * _UNITS[match[2]] or None


@dataclass
class _Entry:
    """One `<sha256>/` folder as eviction sees it: when last used and what evicting it frees."""

    folder: Path
    used_ns: int = 0  # the newest stamp's mtime (ns since the epoch)
    evictable: list[tuple[Path, int, int]] = field(default_factory=list)  # (file, size, its stamp's mtime_ns)


class DownloadCache:
    """Verified files under `root/<main sha256>/<name>`, each with a `.<name>.stamp` beside it.

    `max_bytes`: the cap on the bytes only the cache holds (see the module docstring); None for none.
    """

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes

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
        _touch(self._stamp(cached))  # used now: the last to be evicted
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
            _touch(stamp_partial)  # the clock's ns, not the filesystem's coarser write time
            stamp_partial.replace(self._stamp(path))
        except OSError:
            _discard(stamp_partial)
        _discard(link)
        with contextlib.suppress(OSError):  # best effort too: the next `remember` tries again
            self.evict(keep=path.parent)

    def evict(self, keep: Path | None = None) -> tuple[int, int]:
        """Evict least recently used entries, never the folder `keep`, until the bytes only the cache
        holds are at most `max_bytes` (or nothing more may go): (files removed, bytes freed).
        Only stamped files held by no other path go; a stamp used again since the scan keeps its file."""
        if self.max_bytes is None:
            return 0, 0
        own, entries = self._scan()
        removed = freed = 0
        for entry in sorted(entries, key=lambda e: e.used_ns):
            if own - freed <= self.max_bytes:
                break
            if entry.folder == keep:
                continue
            for path, size, used_ns in entry.evictable:
                with contextlib.suppress(OSError):
                    if self._stamp(path).stat().st_mtime_ns != used_ns:
                        continue  # reused or remembered anew by another client meanwhile
                    self._stamp(path).unlink()  # first: a concurrent reuse then sees no intact entry
                    path.unlink()
                    removed, freed = removed + 1, freed + size
        return removed, freed

    def _scan(self) -> tuple[int, list[_Entry]]:
        """(bytes only the cache holds, every entry with its recency and what evicting it frees)."""
        own, entries = 0, []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir():
                continue  # `.live/`: parts being written
            entry = _Entry(folder)
            try:
                children = list(folder.iterdir())
            except OSError:  # removed meanwhile (another client's prune)
                continue
            for path in children:
                if path.name.startswith("."):  # stamps, and `.partial` files being written
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                own += st.st_size if st.st_nlink == 1 and stat.S_ISREG(st.st_mode) else 0
                try:  # no stamp: not yet verified (being written) or dropped; `prune` removes it
                    used_ns = self._stamp(path).stat().st_mtime_ns
                except OSError:
                    continue
                entry.used_ns = max(entry.used_ns, used_ns)
                if st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
                    entry.evictable.append((path, st.st_size, used_ns))
            entries.append(entry)
        return own, entries

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


def _touch(path: Path) -> None:
    """Mark `path` used now (its mtime; atime is unreliable under noatime/relatime)."""
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
