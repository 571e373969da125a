"""Write: which temporary file of the local store is being written now, so a reader can follow it.

[Note: live files] A local writer (write.directory) writes `.<name>.<attempt>.partial` and renames it
onto `<name>` at commit. Beside it, while it writes, a marker `.<name>.live.partial` holds that
temporary file's name: the API follows the file as it grows (api.live), so a client receives the
weights while the job is still writing them (issue 17). The marker is replaced atomically (the
newest attempt wins; every attempt writes the same bytes, the job id being their content hash), is
removed by the writer that set it when it commits or aborts, and ends in `.partial` so the cleanups
that remove dead attempts' temporary files (LocalArtifacts.clean) remove a dead attempt's marker too.
An open descriptor keeps reading the same file across the rename at commit; an aborted attempt's
file is unlinked, which a reader sees as a link count of 0.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LIVE_SUFFIX = ".live.partial"


def marker(path: Path) -> Path:
    """The marker of the artifact at `path` (its final name)."""
    return path.with_name(f".{path.name}{LIVE_SUFFIX}")


def mark_live(path: Path, temporary: Path) -> None:
    """Record that `temporary` (beside `path`) is the file being written for `path` now. Best effort:
    a marker that cannot be written costs the live download, never the job."""
    staged = temporary.with_name(f"{temporary.name}.mark.partial")  # cleanups take a leftover too
    with contextlib.suppress(OSError):
        staged.write_text(temporary.name, encoding="ascii")
        os.replace(staged, marker(path))
    with contextlib.suppress(OSError):
        staged.unlink(missing_ok=True)


def unmark_live(path: Path, temporary: Path) -> None:
    """Remove the marker if it still names `temporary` (a newer attempt's marker stays)."""
    if live_temporary(path) == temporary:
        with contextlib.suppress(OSError):
            marker(path).unlink()


def live_temporary(path: Path) -> Path | None:
    """The temporary file being written for `path` now, None when no writer has marked one."""
    try:
        name = marker(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not name.startswith(f".{path.name}.") or "/" in name or name.endswith(LIVE_SUFFIX):
        return None  # not a marker this module wrote: never follow it anywhere else
    return path.with_name(name)
