"""Scratch folders of the benchmark scripts: removed when the run ends, unless --keep (issue 18, item 6).

A 7B run writes 13.5 GB into its store; left in the temp folder, a second run can fill the disk.
Every script that writes anything makes its folders here and offers `--keep`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def add_keep_argument(parser: argparse.ArgumentParser) -> None:
    """`--keep`: leave the run's scratch folders in place (their paths are printed to stderr)."""
    parser.add_argument("--keep", action="store_true", help="keep this run's scratch folders (it prints where)")


@contextmanager
def scratch(prefix: str, keep: bool, given: str | Path | None = None, parent: Path | None = None) -> Iterator[Path]:
    """A new folder `tempfile.mkdtemp(prefix=prefix, dir=parent)` (parent None: the system's temp
    folder), removed with all it holds when the block exits, whether by return, exception or Ctrl-C
    (KeyboardInterrupt runs the `finally`); with `keep`, left in place and its path printed to stderr.

    `given` is a folder the user named (a --data-dir): yielded as is, never removed, since it is
    theirs. Stop what writes into the folder (servers, workers) inside the block, before it is
    removed. A removal that fails (a file still held open on some filesystems, a mount) is reported
    on stderr with the folder's path, never raised over the block's own result or exception.
    """
    if given is not None:
        yield Path(given)
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path} (--keep)", file=sys.stderr)
        else:
            remove(path)


def remove(path: Path) -> None:
    """Remove the folder `path` and everything under it; a failure is printed, not raised."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass  # already gone: the goal of the call
    except OSError as exc:
        print(f"could not remove {path}: {exc}; remove it by hand", file=sys.stderr)
