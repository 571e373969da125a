"""Start, watch and stop the embedded worker process; the API process itself never imports torch."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from initium.service.config import Settings
from initium.service.jobs.store import HEARTBEAT

log = logging.getLogger("initium.supervisor")


class WorkerSupervisor:
    """One child worker process; restarted if it dies, stopped gracefully with the API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "initium.service.pipeline",
            "--data-dir", str(self.settings.data_dir),
            "--device", self.settings.device,
            "--poll-interval", str(self.settings.poll_interval),
            "--artifact-store", self.settings.artifact_store,
        ]  # fmt: skip
        if self.settings.s3_endpoint_url:
            cmd += ["--s3-endpoint-url", self.settings.s3_endpoint_url]
        self.process = subprocess.Popen(cmd, env=os.environ.copy())
        log.info("worker process %d started", self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        """Restart a worker that exited; its unfinished job is still queued and resumes."""
        if self.process is not None and not self.alive():
            log.warning("worker process exited with %s; restarting", self.process.returncode)
            self.start()

    def heartbeat_age(self) -> float | None:
        try:
            return time.time() - (self.settings.data_dir / HEARTBEAT).stat().st_mtime
        except FileNotFoundError:
            return None

    def ready(self) -> bool:
        age = self.heartbeat_age()
        return self.alive() and age is not None and age < self.settings.worker_stale_after

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM lets the worker finish its job; past `timeout` it is killed and the job stays queued."""
        if self.process is None or not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
