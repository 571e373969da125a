"""The embedded workers' lifecycle (issue 16, item 3): one per lane, each dying with its API, and never
two on one lane of a data directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import torch

from initium.service.config import Settings
from initium.service.jobs.records import FileJobRecords
from initium.service.jobs.store import LARGE, SMALL, JobStore, heartbeat_name
from initium.service.jobs.supervisor import WorkerSupervisor
from initium.service.pipeline import lifecycle
from initium.service.pipeline.loop import Worker
from tests.conftest import free_port

INITIUM = str(Path(sys.executable).parent / "initium")


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaps yet counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_ready(url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline, body = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{url}/readyz", timeout=5).json()
            if body["status"] == "ready":
                return dict(body)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s: {body}")


def _serve(port: int, data: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INITIUM_DEVICE": "cpu"}
    with open(log_path, "ab") as log:
        return subprocess.Popen([INITIUM, "serve", "--port", str(port), "--data-dir", str(data)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip


# Four 2048x2048 layers: a few seconds of CPU with the report and the probe, long enough to be killed in.
_BUSY = {
    "spec": {"name": "busy", "modules": [{"type": "linear", "in_features": 2048, "out_features": 2048}] * 4},
    "policy": {"rules": [{"match": {"role": "weight"}, "init": {"scheme": "orthogonal"}},
                         {"match": {"role": "bias"}, "init": {"scheme": "zeros"}}]},
}  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_api_stops_its_workers_and_the_restarted_api_finishes_the_job(tmp_path: Path) -> None:
    """`initium serve` runs one worker per lane, which /readyz reports; after kill -9 of the API
    neither worker lives on, the busy one included (issue 16: an orphan ran the job beside the
    restarted API's worker and failed it). The restarted API's worker finishes the job once."""
    port, data = free_port(), tmp_path / "data"
    api = _serve(port, data, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        lanes = _wait_ready(url)["lanes"]
        assert set(lanes) == {LARGE, SMALL} and {lane["device"] for lane in lanes.values()} == {"cpu"}
        assert all(lane["worker"] == "ok" and lane["heartbeat_age_s"] < 10 for lane in lanes.values()), lanes
        pids = [int(lane["pid"]) for lane in lanes.values()]
        assert len(set(pids)) == 2 and not any(_gone(pid) for pid in pids)
        job = httpx.post(f"{url}/v1/initializations", json=_BUSY, timeout=30).json()
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/initializations/{job['id']}").json()["state"] == "queued":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        api.send_signal(signal.SIGKILL)
        api.wait()
        killed = time.monotonic()
        while not all(_gone(pid) for pid in pids) and time.monotonic() - killed < 10:
            time.sleep(0.05)
        assert all(_gone(pid) for pid in pids), f"workers {pids} outlived their API; log in {tmp_path}"
        assert time.monotonic() - killed < 5
        # Cut short mid-run, and released: queued again with its attempt uncounted (three API restarts
        # must not fail a healthy job as one that kills its worker).
        cut = FileJobRecords(data).load(job["id"])
        assert (cut.state, cut.attempts) == ("queued", 0), cut
        api = _serve(port, data, tmp_path / "serve.log")
        _wait_ready(url)
        status: dict[str, Any] = {}
        while status.get("state") not in ("succeeded", "failed"):
            assert time.monotonic() - killed < 120, status
            time.sleep(0.2)
            status = httpx.get(f"{url}/v1/initializations/{job['id']}").json()
        assert status["state"] == "succeeded" and status["attempts"] == 1, status
        weights = httpx.get(f"{url}/v1/initializations/{job['id']}/weights", timeout=60)
        assert weights.status_code == 200 and weights.headers["etag"] == f'"{status["sha256"]}"'
        assert not list(data.rglob("*.partial")), "the cut-short attempt's temporary files stayed"
    finally:
        api.kill()
        api.wait()


def test_the_orphan_grace_ends_a_process_that_is_still_busy() -> None:
    """Once orphaned, a worker still running a job past its grace is ended (exit 1), whatever it does."""
    code = "from initium.service.pipeline import lifecycle; import time; lifecycle.exit_after(0.2); time.sleep(30)"
    started = time.monotonic()
    assert subprocess.run([sys.executable, "-c", code], timeout=20).returncode == 1
    assert time.monotonic() - started < 10


def test_die_with_parent_reports_a_parent_already_gone() -> None:
    """A worker whose API exited before it could arm PR_SET_PDEATHSIG must notice and stop."""
    assert lifecycle.die_with_parent(os.getppid()) is True
    assert lifecycle.die_with_parent(os.getppid() + 1_000_000) is False


def test_a_second_worker_on_a_lane_waits_until_the_first_lets_go(tmp_path: Path) -> None:
    path, stopping = tmp_path / "worker-large.lock", threading.Event()
    took: list[bool] = []
    with lifecycle.lane_lock(path, stopping) as first:
        assert first

        def second() -> None:
            with lifecycle.lane_lock(path, stopping, poll_s=0.01) as held:
                took.append(held)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and took == []  # waiting, as a restarted API's worker waits for an orphan's
    thread.join(5)
    assert took == [True]
    with lifecycle.lane_lock(path, stopping) as first:
        stopping.set()  # a worker told to stop while waiting gives up without the lane
        with lifecycle.lane_lock(path, stopping, poll_s=0.01) as held:
            assert first and not held


class _Process:
    """What the supervisor reads of a child: its pid and whether it runs."""

    def __init__(self, pid: int, returncode: int | None = None) -> None:
        self.pid, self.returncode = pid, returncode

    def poll(self) -> int | None:
        return self.returncode


def _beat(data_dir: Path, lane: str, pid: int, age_s: float = 0.0) -> None:
    path = data_dir / heartbeat_name(lane)
    path.write_text(str(pid))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_lane_status_tells_its_own_worker_from_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(data_dir=tmp_path, device="cuda:1", worker_stale_after=10.0)
    supervisor = WorkerSupervisor(settings)
    started: list[list[str]] = []

    def popen(cmd: list[str], env: dict[str, str]) -> _Process:
        started.append(cmd)
        return _Process(100 + len(started))

    monkeypatch.setattr(subprocess, "Popen", popen)
    supervisor.start()
    assert [cmd[cmd.index("--lane") + 1] for cmd in started] == [LARGE, SMALL]
    assert [cmd[cmd.index("--device") + 1] for cmd in started] == ["cuda:1", "cpu"]  # small jobs on the CPU
    assert all(cmd[cmd.index("--parent-pid") + 1] == str(os.getpid()) for cmd in started)
    assert supervisor.lane_status(LARGE)["worker"] == "starting" and not supervisor.ready()
    _beat(tmp_path, LARGE, 101)
    _beat(tmp_path, SMALL, 999)  # an orphan of a killed API still holds the small lane
    assert supervisor.lane_status(LARGE)["worker"] == "ok"
    assert supervisor.lane_status(SMALL) == {"worker": "waiting", "device": "cpu", "pid": 102, "heartbeat_age_s": None}
    assert not supervisor.ready() and supervisor.heartbeat_age() is None
    _beat(tmp_path, SMALL, 102, age_s=3.0)
    age = supervisor.heartbeat_age()
    assert supervisor.ready() and age is not None and 2.5 < age < 10
    _beat(tmp_path, LARGE, 101, age_s=11.0)  # stale: its worker hangs
    assert supervisor.lane_status(LARGE)["worker"] == "down" and not supervisor.ready()
    supervisor.processes[SMALL] = _Process(102, returncode=-9)  # type: ignore[assignment]
    assert supervisor.lane_status(SMALL)["worker"] == "down"
    supervisor.ensure_running()  # only the dead one is restarted
    assert len(started) == 3 and started[-1][started[-1].index("--lane") + 1] == SMALL


def test_one_worker_when_the_small_lane_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    def popen(cmd: list[str], env: dict[str, str]) -> SimpleNamespace:
        started.append(cmd)
        return SimpleNamespace(pid=1)

    monkeypatch.setattr(subprocess, "Popen", popen)
    WorkerSupervisor(Settings(data_dir=tmp_path, small_lane_device="off")).start()
    assert len(started) == 1 and started[0][started[0].index("--lane") + 1] == LARGE


def test_a_worker_that_cannot_use_its_device_is_never_ready_and_readyz_says_why(tmp_path: Path) -> None:
    """Issue 16 item 6, embedded: a lane asked to run on a GPU this host lacks exits before taking a job,
    is not restarted in a loop, and /readyz names the lane, the device and the fix."""
    if subprocess.run([sys.executable, "-c", "import torch; assert not torch.cuda.is_available()"]).returncode:
        pytest.skip("this host has a GPU: cuda:0 is usable here")
    port = free_port()
    env = {**os.environ, "INITIUM_DEVICE": "cuda:0"}
    with open(tmp_path / "serve.log", "wb") as log:
        api = subprocess.Popen([INITIUM, "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                               stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline, body = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            body = answer.json()
            if body.get("lanes", {}).get(LARGE, {}).get("worker") == "device_unusable":
                break
            assert answer.status_code == 503, body  # never ready on the way there
            time.sleep(0.2)
        large = body["lanes"][LARGE]
        assert answer.status_code == 503 and body["worker"] == "device_unusable", body
        assert "cuda:0" in large["problem"] and "INITIUM_DEVICE" in large["problem"], large
        pid = large["pid"]
        time.sleep(2)  # the supervisor's watch runs every second: it must not restart the lane yet
        again = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["lanes"][LARGE]
        assert again["pid"] == pid and again["worker"] == "device_unusable", again
    finally:
        api.terminate()
        api.wait(30)


def test_stopping_an_unsupervised_worker_never_ends_its_process(tmp_path: Path) -> None:
    """Only a supervised worker (its own process) exits by itself past its grace; a Worker run in a
    caller's process (tests, local use) only stops taking jobs (the suite itself was once ended by it)."""
    before = _timers()
    worker = Worker(JobStore(tmp_path), torch.device("cpu"), grace_s=0.2)
    worker.stop()
    assert worker.stopping.is_set() and _timers() == before


def _timers() -> int:
    return sum(isinstance(t, threading.Timer) for t in threading.enumerate())
