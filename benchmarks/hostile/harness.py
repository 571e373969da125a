"""The probes' harness: the registry and Verdict, and the Lab that owns every process, port and mount."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.llama7b import descendants
from initium.schemas.registry import Registry

INITIUM = str(Path(sys.executable).parent / "initium")
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class Verdict:
    """What a probe saw: held True/False, or None when it could not run here (observed says why)."""

    held: bool | None
    observed: str


@dataclass(frozen=True)
class Probe:
    """One row of the table: the issue's input, what must hold, and the function that checks it."""

    id: str
    input: str
    must: str
    check: Callable[[Lab], Verdict]


PROBES: Registry[Probe] = Registry("probe")


def probe(probe_id: str, input_: str, must: str) -> Callable[[Callable[[Lab], Verdict]], Callable[[Lab], Verdict]]:
    """Register the decorated function as probe `probe_id` (the issue's item number plus a letter)."""

    def add(check: Callable[[Lab], Verdict]) -> Callable[[Lab], Verdict]:
        PROBES.register(probe_id)(Probe(probe_id, input_, must, check))
        return check

    return add


def item_of(probe_id: str) -> int:
    return int(probe_id.rstrip("abcdefghijklmnopqrstuvwxyz"))


# ---------------------------------------------------------------------------------------------
# Processes, ports, mounts: everything a probe starts is owned by the Lab and cleaned up by it.


@dataclass
class Service:
    """One `initium serve` on loopback: its process (the API), URL and data directory."""

    process: subprocess.Popen[bytes]
    url: str
    data: Path

    def up(self, log: Path, path: str) -> bool:
        """`path` answers 200; RuntimeError with the log's last line if the process has exited."""
        if self.process.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["(empty log)"]
            raise RuntimeError(f"serve exited with {self.process.returncode}: {lines[-1]}")
        return answers(self.url, path)

    def workers(self) -> list[int]:
        """The embedded worker processes (children of the API running initium.service.pipeline)."""
        return [p for p in descendants(self.process.pid) if b"initium.service.pipeline" in cmdline(p)]


@dataclass
class Lab:
    """The run's state: sizes, ports, folders, started process groups, mounts and cached scenarios."""

    root: Path
    quick: bool
    ports: Iterator[int]
    groups: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)
    shared_service: Service | None = None
    count: int = 0

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def port(self) -> int:
        """The next port of the range that binds on loopback now."""
        for port in self.ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError("the port range is used up; pass a wider --ports")

    def folder(self, name: str) -> Path:
        self.count += 1
        path = self.root / f"{self.count:02d}-{name}"
        path.mkdir(parents=True)
        return path

    def spawn(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `args` in its own session, so its whole process group (orphans included) can be killed."""
        with open(log, "ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **(env or {})})  # fmt: skip
        self.groups.append(process)
        return process

    def serve(self, data: Path, *extra: str, env: dict[str, str] | None = None, ready: bool = True) -> Service:
        """`initium serve` on a port of the range, data in `data`; waits for /readyz unless told not to."""
        port = self.port()
        args = [INITIUM, "serve", "--port", str(port), "--data-dir", str(data), *extra]
        log = self.root / f"serve-{port}.log"
        process = self.spawn(args, log, env)
        service = Service(process, f"http://127.0.0.1:{port}", data)
        wait_until(lambda: service.up(log, "/healthz"), 60, f"serve on {port} answering")
        if ready:
            wait_until(lambda: service.up(log, "/readyz"), 180, f"serve on {port} ready")
        return service

    def shared(self) -> Service:
        """One default service for the probes that leave it as they found it (2, 9c-d, 11-13, 15)."""
        if self.shared_service is None or self.shared_service.process.poll() is not None:
            self.shared_service = self.serve(self.folder("shared") / "data")
        return self.shared_service

    def scenario(self, run: Callable[[Lab], dict[str, Any]]) -> dict[str, Any]:
        """What `run` observed, run once per run of the script (several probes read one scenario)."""
        if run.__name__ not in self.scenarios:
            try:
                self.scenarios[run.__name__] = run(self)
            except Exception as exc:  # every probe of the scenario reports it, and it runs once
                self.scenarios[run.__name__] = {"error": exc}
        seen = self.scenarios[run.__name__]
        if "error" in seen:
            raise seen["error"]
        return seen

    def mount_tmpfs(self, path: Path, megabytes: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], check=True,
                       capture_output=True)  # fmt: skip
        self.mounts.append(path)

    def cleanup(self, everything: bool = False) -> None:
        """Kill every process group started (but the shared service, unless `everything`), then unmount."""
        keep = None if everything or self.shared_service is None else self.shared_service.process
        for process in [p for p in self.groups if p is not keep]:
            kill_group(process)
            self.groups.remove(process)
        if everything:
            self.shared_service = None
        for path in list(self.mounts):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
            self.mounts.remove(path)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group `process` leads (it was started in its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(30)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for {pid}")


def wait_until(ok: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    """Seconds until ok() held; TimeoutError naming `what` past `timeout`."""
    started = time.monotonic()
    while not ok():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - started


def answers(url: str, path: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url + path, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def redis(lab: Lab, folder: Path) -> str:
    """A throwaway redis-server on a port of the range (no persistence); its broker URL."""
    port = lab.port()
    lab.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
              folder / "redis.log")  # fmt: skip
    wait_until(lambda: connects(port), 10, "redis listening", 0.1)
    return f"redis://127.0.0.1:{port}/0"


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False
