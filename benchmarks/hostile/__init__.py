"""Hostile and heavy traffic, crashes and misconfiguration against real `initium serve` processes (issue 16).

    .venv/bin/python -m benchmarks.hostile [--quick] [--only 3a 12 ...] [--list] [--root DIR] [--ports 18800-18999]
                                           [--keep]

Every probe reproduces one input of issue 16 on loopback against real processes: `initium serve`
with its embedded worker (the default), Celery with a real redis-server and real `initium worker`
processes where the item is about Celery, a tmpfs it mounts (as root) for the full disk, and nginx
with the configuration under deploy/ for what only a proxy can bound. A probe's id is the issue's
item number plus a letter; it checks what the issue says must hold and prints one row of the
markdown table docs/reliability.md carries: probe, input, what must hold, what was observed, held,
seconds. Every probe kills the process groups it started and unmounts what it mounted, held or not.
The run's folder (data and logs, under --root or the temporary folder) is removed at the end unless --keep.
`--only` takes probe ids or item numbers; `--quick` shrinks the sizes (for development; the table
in the docs comes from a full run, 3 to 8 minutes on 2 cores, bounded to 15). Exit status 1 unless
every probe that ran held (a skipped probe says why in its row).
"""

from __future__ import annotations

# Importing a section registers its probes, and `--list` and the table keep that order: the (1-15).
from benchmarks.hostile import files, crashes, load, records, protocol  # isort: skip

__all__ = ["files", "crashes", "load", "records", "protocol"]
