"""Start, watch and stop the embedded workers, one process per lane; the API process itself never imports torch.

The large lane's worker runs on the configured device (INITIUM_DEVICE), the small lane's on
INITIUM_SMALL_LANE_DEVICE, the CPU by default: values do not depend on the device (DESIGN.md,
reproducibility contract), so a small job gives the same bytes there, and it neither waits for the
GPU nor takes GPU memory from the large job running on it (see [Note: lanes] in jobs.store).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from initium.service.config import Settings
from initium.service.jobs.store import EXIT_DEVICE_UNUSABLE, LARGE, SMALL, device_problem_name, heartbeat_name

log = logging.getLogger("initium.supervisor")
# A worker that found its device unusable is started again only this often: the device will not
# appear by itself, and each start costs a torch import and a CUDA probe.
DEVICE_RETRY_S = 60.0


class WorkerSupervisor:
    """One child worker process per lane; each restarted if it dies, stopped gracefully with the API,
    and dying with the API if the API is killed (see [Note: orphaned worker] in pipeline.lifecycle)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.devices = {LARGE: settings.device}  # lane -> device
        if settings.small_lane_device != "off":
            self.devices[SMALL] = settings.small_lane_device
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._exited: dict[str, float] = {}  # lane -> when its worker exited for an unusable device

    def command(self, lane: str) -> list[str]:
        cmd = [
            sys.executable, "-m", "initium.service.pipeline",
            "--data-dir", str(self.settings.data_dir),
            "--device", self.devices[lane],
            "--lane", lane,
            "--parent-pid", str(os.getpid()),
            "--grace-s", str(self.settings.worker_grace_s),
            "--poll-interval", str(self.settings.poll_interval),
            "--artifact-store", self.settings.artifact_store,
        ]  # fmt: skip
        if self.settings.s3_endpoint_url:
            cmd += ["--s3-endpoint-url", self.settings.s3_endpoint_url]
        return cmd

    def start(self) -> None:
        for lane in self.devices:
            self._start(lane)

    def _start(self, lane: str) -> None:
        process = subprocess.Popen(self.command(lane), env=os.environ.copy())
        self.processes[lane] = process
        log.info("%s-job worker process %d started on %s", lane, process.pid, self.devices[lane])

    def alive(self, lane: str = LARGE) -> bool:
        process = self.processes.get(lane)
        return process is not None and process.poll() is None

    def ensure_running(self) -> None:
        """Restart a worker that exited; its unfinished job is still queued and resumes. One that could
        not use its device is restarted every DEVICE_RETRY_S (its reason stays on /readyz meanwhile)."""
        for lane, process in list(self.processes.items()):
            if self.alive(lane):
                continue
            if process.returncode == EXIT_DEVICE_UNUSABLE:
                exited = self._exited.setdefault(lane, time.monotonic())
                if time.monotonic() - exited < DEVICE_RETRY_S:
                    continue
            log.warning("%s-job worker process exited with %s; restarting", lane, process.returncode)
            self._exited.pop(lane, None)
            self._start(lane)

    def device_problem(self, lane: str) -> str | None:
        """Why the lane's worker cannot use its device, as it left it; None when it can (or has not said)."""
        try:
            return (self.settings.data_dir / device_problem_name(lane)).read_text() or None
        except FileNotFoundError:
            return None

    def _heartbeat(self, lane: str) -> tuple[int | None, float | None]:
        """The pid the lane's heartbeat names and its age in seconds; (None, None) before any beat."""
        path = self.settings.data_dir / heartbeat_name(lane)
        try:
            age = time.time() - path.stat().st_mtime
            return int(path.read_text() or 0), age
        except (FileNotFoundError, ValueError):
            return None, None

    def _own_beat(self, lane: str) -> tuple[str, float | None]:
        """The lane's state and its own child's heartbeat age (None when the beat is not its child's)."""
        pid, age = self._heartbeat(lane)
        process = self.processes.get(lane)
        fresh = age is not None and age < self.settings.worker_stale_after
        own = process is not None and pid == process.pid
        if not self.alive(lane):
            unusable = process is not None and process.returncode == EXIT_DEVICE_UNUSABLE
            return ("device_unusable" if unusable else "down"), age if own else None
        if own:
            return ("ok" if fresh else "down"), age
        return ("waiting" if fresh else "starting"), None

    def lane_status(self, lane: str) -> dict[str, object]:
        """worker: ok (its own child beats), starting (alive, no beat yet: warming up), waiting (another
        process, the orphan of a killed API, still holds the lane), device_unusable (with `problem`:
        why, e.g. cuda:0 on a host without a GPU) or down; its device, its pid and the age of its own
        heartbeat in seconds."""
        state, age = self._own_beat(lane)
        process = self.processes.get(lane)
        status: dict[str, object] = {
            "worker": state,
            "device": self.devices[lane],
            "pid": None if process is None else process.pid,
            "heartbeat_age_s": None if age is None else round(age, 3),
        }
        if state == "device_unusable":
            status["problem"] = self.device_problem(lane)
        return status

    def lanes(self) -> dict[str, dict[str, object]]:
        return {lane: self.lane_status(lane) for lane in self.devices}

    def ready(self) -> bool:
        return all(self._own_beat(lane)[0] == "ok" for lane in self.devices)

    def heartbeat_age(self) -> float | None:
        """The oldest of the lanes' own heartbeats; None while a lane has none of its own."""
        ages = [self._own_beat(lane)[1] for lane in self.devices]
        return None if any(a is None for a in ages) else max(a for a in ages if a is not None)

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM lets each worker finish its job; past `timeout` (INITIUM_WORKER_GRACE_S) it is killed
        and the job stays queued."""
        running = [p for lane, p in self.processes.items() if self.alive(lane)]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + (self.settings.worker_grace_s if timeout is None else timeout)
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
