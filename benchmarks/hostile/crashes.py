"""Items 3-6: crashes that lose or corrupt state."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._serve import readme_mlp
from benchmarks.hostile.harness import INITIUM, Lab, Verdict, alive, answers, kill_group, probe, redis, wait_until
from benchmarks.hostile.jobs import (
    ZEROS,
    finished,
    megabytes,
    short,
    status,
    submit,
    terminal,
    wait_job,
    wide,
)


def api_killed(lab: Lab) -> dict[str, Any]:
    """Kill -9 the API mid-job, restart it on the same data, and watch the job to the end."""
    data = lab.folder("kill-api") / "data"
    first = lab.serve(data)
    job = submit(first.url, wide(16))
    wait_job(first.url, job["id"], lambda j: j["state"] == "running", 120)
    workers = first.workers()
    os.kill(first.process.pid, signal.SIGKILL)
    try:  # waited for up to 30 s, so the row says how late a worker that outlives its parent exits
        gone: float | None = wait_until(lambda: not any(alive(w) for w in workers), 30, "the worker exiting", 0.05)
    except TimeoutError:
        gone = None
    second = lab.serve(data)
    states = [wait_job(second.url, job["id"], terminal, 300)["state"]]
    settle = time.monotonic() + lab.size(60, 30)  # the orphan, if any, finishes its run meanwhile
    while time.monotonic() < settle and (any(alive(w) for w in workers) or len(states) < 20):
        states.append(status(second.url, job["id"])["state"])
        time.sleep(0.5)
    final = status(second.url, job["id"])
    code, digest = download_sha256(f"{second.url}/v1/initializations/{job['id']}/weights")
    return {"gone": gone, "workers": workers, "states": states, "final": final,
            "download": code, "sha_ok": digest == final.get("sha256")}  # fmt: skip


def download_sha256(url: str) -> tuple[int, str | None]:
    """(status, sha256 of the body streamed; None unless 200)."""
    sha = hashlib.sha256()
    with httpx.stream("GET", url, timeout=300) as response:
        if response.status_code != 200:
            return response.status_code, None
        for chunk in response.iter_bytes(1 << 20):
            sha.update(chunk)
    return 200, sha.hexdigest()


@probe("3a", "kill -9 of the API while its worker runs a 1 GB job", "the worker dies with its parent (within 5 s)")
def worker_dies_with_api(lab: Lab) -> Verdict:
    seen = lab.scenario(api_killed)
    if seen["gone"] is None:
        return Verdict(False, f"workers {seen['workers']} still alive 30 s after the API died (re-parented)")
    return Verdict(seen["gone"] <= 5.0, f"the workers exited {seen['gone']:.2f} s after the API")


@probe("3b", "then the API restarted on the same data (a second worker)",
       "the job ends succeeded, stays succeeded, and its download answers 200 with its sha256")  # fmt: skip
def succeeded_stays(lab: Lab) -> Verdict:
    seen = lab.scenario(api_killed)
    states = [s for i, s in enumerate(seen["states"]) if i == 0 or s != seen["states"][i - 1]]
    final = seen["final"]
    held = final["state"] == "succeeded" and "failed" not in states and seen["download"] == 200 and seen["sha_ok"]
    error = f" ({short(final['error']['message'], 60)})" if final.get("error") else ""
    return Verdict(
        held, f"states {' -> '.join(states)}{error}; download {seen['download']}, sha256 ok {seen['sha_ok']}"
    )


def running_attempt(attempt: int) -> Callable[[dict[str, Any]], bool]:
    return lambda job: job["state"] == "running" and job["attempts"] == attempt


def worker_killed_thrice(lab: Lab) -> dict[str, Any]:
    """Kill -9 the worker three times while it runs one job (what a job that OOMs its worker does)."""
    service = lab.serve(lab.folder("kill-worker") / "data")
    job_id = submit(service.url, wide(16, seed=1))["id"]
    last: list[int] = []
    first_seen: list[int] = []
    for attempt in (1, 2, 3):
        now = wait_job(service.url, job_id, running_attempt(attempt), 300)
        first_seen.append(now["progress"]["bytes_done"])
        now = wait_job(service.url, job_id, lambda j: j["progress"]["bytes_done"] > 0 or terminal(j), 300)
        if terminal(now):
            raise RuntimeError(f"attempt {attempt} ended {now['state']} before the kill; raise the size")
        last.append(now["progress"]["bytes_done"])
        for pid in service.workers():
            os.kill(pid, signal.SIGKILL)
    final = wait_job(service.url, job_id, terminal, 120)
    time.sleep(1.0)  # whatever cleans up after the failure has had its chance
    partial = [p for p in service.data.rglob("*") if p.is_file() and "partial" in p.name]
    return {"final": final, "last": last, "first_seen": first_seen, "partial": partial,
            "partial_bytes": sum(p.stat().st_size for p in partial)}  # fmt: skip


@probe("4a", "a 1 GB job whose worker is killed -9 during each of its 3 attempts",
       "the job fails with a message and leaves no .partial file")  # fmt: skip
def no_partials(lab: Lab) -> Verdict:
    seen = lab.scenario(worker_killed_thrice)
    final = seen["final"]
    message = (final.get("error") or {}).get("message", "")
    held = final["state"] == "failed" and bool(message) and not seen["partial"]
    return Verdict(held, f"{final['state']} ({short(message, 50)}); {len(seen['partial'])} partial files, "
                         f"{megabytes(seen['partial_bytes'])}")  # fmt: skip


@probe("4b", "the same job's status at the start of attempts 2 and 3",
       "progress is the current attempt's: below where the killed attempt had got")  # fmt: skip
def attempt_progress(lab: Lab) -> Verdict:
    seen = lab.scenario(worker_killed_thrice)
    pairs = list(zip(seen["last"][:-1], seen["first_seen"][1:], strict=True))
    held = all(start < before for before, start in pairs)
    text = "; ".join(f"attempt {i + 2} started at {megabytes(s)} (attempt {i + 1} reached {megabytes(b)})"
                     for i, (b, s) in enumerate(pairs))  # fmt: skip
    return Verdict(held, text)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the file system refuses (ENOSPC): the disk is full."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for block in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                continue
    return filler


def disk_full(lab: Lab) -> dict[str, Any]:
    """The embedded default on a 256 MB tmpfs (above INITIUM_MIN_FREE_BYTES), which a filler file then fills."""
    folder = lab.folder("disk-full")
    data = folder / "tmpfs"
    lab.mount_tmpfs(data, 256)
    service = lab.serve(data / "data")
    filler = fill(data)
    preset = {"name": "full-disk", "version": 1, "description": "d", "rules": ZEROS["rules"]}
    job = httpx.post(f"{service.url}/v1/initializations", json=readme_mlp(11), timeout=60)
    published = httpx.post(f"{service.url}/v1/presets", json=preset, timeout=60)
    time.sleep(1.0)  # readiness may be computed on a timer
    ready = httpx.get(f"{service.url}/readyz", timeout=30)
    filler.unlink()
    try:
        recovered: float | None = wait_until(lambda: answers(service.url, "/readyz"), 30, "ready again")
        after = finished(service.url, readme_mlp(12), 60)["state"]
    except (TimeoutError, RuntimeError) as exc:
        recovered, after = None, short(str(exc), 60)
    return {"job": job, "preset": published, "ready": ready, "recovered": recovered, "after": after,
            "path": str(data.resolve())}  # fmt: skip


def full_answer(response: httpx.Response) -> Verdict:
    return Verdict(response.status_code == 507, f"{response.status_code}: {short(response.text, 110)}")


@probe("5a", "POST /v1/initializations with the data disk full (a 256 MB tmpfs)", "507 with a message")
def full_submit(lab: Lab) -> Verdict:
    return full_answer(lab.scenario(disk_full)["job"])


@probe("5b", "POST /v1/presets with the data disk full", "507 with a message")
def full_publish(lab: Lab) -> Verdict:
    return full_answer(lab.scenario(disk_full)["preset"])


@probe("5c", "GET /readyz with the data disk full", "503: the store cannot take work")
def full_ready(lab: Lab) -> Verdict:
    ready = lab.scenario(disk_full)["ready"]
    return Verdict(ready.status_code == 503, f"{ready.status_code}: {short(ready.text, 110)}")


@probe("5d", "the filler file removed", "ready again by itself, and a new job succeeds (within 30 s)")
def full_recovers(lab: Lab) -> Verdict:
    seen = lab.scenario(disk_full)
    if seen["recovered"] is None:
        return Verdict(False, f"not ready again: {seen['after']}")
    return Verdict(seen["after"] == "succeeded", f"ready after {seen['recovered']:.1f} s; next job {seen['after']}")


def celery_lane(lab: Lab, folder: Path, broker: str, device: str, name: str) -> subprocess.Popen[bytes]:
    """One real `initium worker` on `broker`, with no GPU visible to it."""
    args = [INITIUM, "worker", "--broker", broker, "--data-dir", str(folder / "data"), "--device", device,
            "--name", f"{name}@hostile"]  # fmt: skip
    return lab.spawn(args, folder / f"worker-{name}.log", {"CUDA_VISIBLE_DEVICES": ""})


def cuda_without_gpu(lab: Lab) -> dict[str, Any]:
    """Celery: a worker told --device cuda:0 on a host without a GPU, then a good CPU worker beside it."""
    folder = lab.folder("celery-cuda")
    broker = redis(lab, folder)
    service = lab.serve(folder / "data", "--broker", broker, ready=False)
    bad = celery_lane(lab, folder, broker, "cuda:0", "bad")
    window = time.monotonic() + lab.size(45, 30)
    ready_at = None
    while time.monotonic() < window and bad.poll() is None and ready_at is None:
        if answers(service.url, "/readyz"):
            ready_at = time.monotonic() - (window - lab.size(45, 30))
        time.sleep(0.5)
    exited = bad.poll()
    celery_lane(lab, folder, broker, "cpu", "good")
    want = 1 if exited is not None else 2
    wait_until(lambda: workers_ready(service.url) >= want, 120, f"{want} Celery workers answering pings", 0.5)
    jobs = [submit(service.url, readme_mlp(100 + i))["id"] for i in range(4)]
    states = settle_jobs(service.url, jobs, lab.size(60, 30))
    if any(not terminal(s) for s in states) and bad.poll() is None:
        kill_group(bad)  # the jobs stayed queued even after the worker was killed
        states = settle_jobs(service.url, jobs, 20)
    return {"exited": exited, "ready_at": ready_at, "states": states}


def workers_ready(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/readyz", timeout=10).json().get("workers", 0))
    except (httpx.HTTPError, ValueError):
        return 0


def settle_jobs(url: str, jobs: list[str], timeout: float) -> list[dict[str, Any]]:
    """The jobs' statuses once all are terminal, or when `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        states = [status(url, j) for j in jobs]
        if all(terminal(s) for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


@probe("6a", "Celery: `initium worker --device cuda:0` on a host with no GPU",
       "it refuses to start, or never reports ready (/readyz stays 503 for 45 s)")  # fmt: skip
def cuda_refuses(lab: Lab) -> Verdict:
    seen = lab.scenario(cuda_without_gpu)
    if seen["exited"] is not None:
        return Verdict(seen["exited"] != 0, f"the worker exited with status {seen['exited']}")
    if seen["ready_at"] is not None:
        return Verdict(False, f"/readyz said ready {seen['ready_at']:.0f} s after the worker started")
    return Verdict(True, "the worker stayed up and /readyz stayed 503")


@probe("6b", "4 jobs submitted with that worker and a CPU worker up (then the bad one killed)",
       "no job stays queued: each succeeds, or fails with the reason")  # fmt: skip
def never_stuck(lab: Lab) -> Verdict:
    states = lab.scenario(cuda_without_gpu)["states"]
    held = all(s["state"] == "succeeded" or (s["state"] == "failed" and s.get("error")) for s in states)
    return Verdict(held, ", ".join(f"{s['state']} (attempts {s['attempts']})" for s in states))
