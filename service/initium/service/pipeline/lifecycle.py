"""What ties an embedded worker process to its lane and to the API that started it (issue 16).

[Note: orphaned worker] An embedded worker dies with its API. On Linux the kernel sends it SIGTERM
when its parent exits (prctl(PR_SET_PDEATHSIG)); everywhere, a thread watching getppid() notices
the same within half a second. An orphan then takes no new job and exits within ORPHAN_EXIT_S,
a running job cut short. Letting that job finish (a clean shutdown's grace, INITIUM_WORKER_GRACE_S)
was tried and refused: a killed API is a crash, whoever killed it expects its processes gone (as a
cgroup kill would leave them), and a job may run for hours with nobody to serve it. The job cut
short goes back to the queue with its attempt uncounted (records.release_attempt: stopping on purpose
says nothing about the job, so API restarts never bring it nearer MAX_ATTEMPTS; its temporary files
go when another attempt commits or the job fails) and the restarted API's worker resumes it.

The two never run one job at once, whichever way it goes: each lane of a data directory is held
by one process through an exclusive flock of <data_dir>/worker-<lane>.lock, taken before its
first heartbeat and released by the kernel only when the process is gone (a restarted API's worker
waits for it, not ready), and each job is claimed by a flock of its own (JobStore.claim), so the
other lane's worker skips it too.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger("initium.worker")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# An orphan's idle loop ends within its poll interval; a running job is cut short after this long.
ORPHAN_EXIT_S = 1.0


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `signum` when the parent exits (Linux: prctl(PR_SET_PDEATHSIG) via ctypes;
    elsewhere only the getppid() watch works). True when the parent is still `parent_pid` once the
    signal is armed; False when it had already gone (the signal would never come): stop as an orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d); watching getppid() only", ctypes.get_errno())
    return os.getppid() == parent_pid


def watch_parent(parent_pid: int, on_orphaned: Callable[[], None], stopping: threading.Event,
                 interval_s: float = 0.5) -> threading.Thread:  # fmt: skip
    """A daemon thread calling `on_orphaned` once the parent is no longer `parent_pid` (re-parented
    to init or a subreaper): the portable fallback for a signal that was lost or never armed."""

    def watch() -> None:
        while not stopping.wait(interval_s):
            if os.getppid() != parent_pid:
                on_orphaned()
                return

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def exit_after(grace_s: float, before: Callable[[], None] | None = None) -> threading.Timer:
    """End the process `grace_s` from now, whatever it is doing (os._exit: no cleanup, as a kill
    would; the job's files stay temporary and the job queued), first calling `before` (the worker
    releases its job's attempt). A clean exit before then wins."""

    def end() -> None:
        log.warning("still running %.1f s after being told to stop; exiting now", grace_s)
        if before is not None:
            try:
                before()
            except Exception:  # exiting matters more: the attempt then counts, as after a crash
                log.exception("could not release the running job before exiting")
        os._exit(1)

    timer = threading.Timer(grace_s, end)
    timer.daemon = True
    timer.start()
    return timer


@contextlib.contextmanager
def lane_lock(path: Path, stopping: threading.Event, poll_s: float = 0.2) -> Iterator[bool]:
    """Hold an exclusive flock of `path` for the block (yields True): while another process holds it,
    wait, polling so that `stopping` ends the wait (yields False)."""
    with open(path, "a") as lock:
        waited = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.warning("another worker holds %s; waiting until it exits (not ready meanwhile)", path.name)
                    waited = True
                if stopping.wait(poll_s):
                    yield False
                    return
        if waited:
            log.info("took %s", path.name)
        yield True
