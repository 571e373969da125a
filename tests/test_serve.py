"""`initium serve` in a subprocess, driven over real HTTP the way DESIGN.md's example is: with the
client, the CLI and plain httpx (as curl would)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import math
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from safetensors.torch import load_file

from tests.conftest import wait_for_job
from tests.service.pipeline.test_job import GOLDEN_SHA256


def test_design_example_over_http(served: str, mlp_request: dict[str, Any]) -> None:
    with httpx.Client(base_url=served, timeout=30) as http:
        submitted = http.post("/v1/initializations", json=mlp_request)
        assert submitted.status_code in (200, 202)
        done = wait_for_job(http, submitted.json()["id"])
        assert done["state"] == "succeeded"
        weights = http.get(done["links"]["weights"])
        assert weights.headers["etag"].strip('"') == hashlib.sha256(weights.content).hexdigest() == done["sha256"]
        again = http.post("/v1/initializations", json=mlp_request)
        assert again.status_code == 200 and again.json()["id"] == done["id"]
        assert http.get(done["links"]["weights"]).content == weights.content
        mlp_request["spec"]["modules"][0]["in_features"] = -1
        bad = http.post("/v1/initializations", json=mlp_request)
        assert bad.status_code == 422 and "in_features" in bad.json()["error"]["message"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    initium = str(Path(sys.executable).parent / "initium")
    return subprocess.run([initium, *args], capture_output=True, text=True, timeout=120)


def _terminal(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `initium ARGS` with a pseudo-terminal as its stdin, stdout and stderr, as in a shell;
    returns the exit code and everything it drew."""
    initium = str(Path(sys.executable).parent / "initium")
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100, like a window
    env = {**os.environ, "TERM": "xterm", **(env or {})}
    proc = subprocess.Popen([initium, *args], stdin=follower, stdout=follower, stderr=follower, env=env,
                            start_new_session=True)  # fmt: skip
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), drawn.decode(errors="replace")


def test_cli_in_a_terminal(served: str, request_file: Path, tmp_path: Path) -> None:
    """What a user at a shell sees: progress while the weights come, the catalog, and errors that
    say what to fix with the exit code a script can test."""
    body = json.loads(request_file.read_text())
    body["seed"] = 4242
    request_file.write_text(json.dumps(body))
    out = tmp_path / "out.safetensors"
    code, screen = _terminal("init", str(request_file), "-o", str(out), "--server", served)
    assert code == 0, screen
    assert "B/s" in screen and "out.safetensors" in screen  # the download's progress bar
    assert f"wrote {out}" in screen and hashlib.sha256(out.read_bytes()).hexdigest() in screen
    local_out = tmp_path / "local.safetensors"
    code, screen = _terminal("init", str(request_file), "-o", str(local_out), "--local",
                             env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "INITIUM_DEVICE": "cpu"})  # fmt: skip
    assert code == 0, screen
    assert local_out.read_bytes() == out.read_bytes()  # local mode: the service's bytes, no server
    preset = tmp_path / "house.json"
    preset.write_text(json.dumps({"name": "cli-house", "version": 1, "description": "ours",
                                  "rules": [{"init": {"scheme": "zeros"}}]}))  # fmt: skip
    code, screen = _terminal("presets", "publish", str(preset), "--server", served)
    assert code == 0 and "published cli-house@1" in screen
    code, screen = _terminal("presets", "list", "--server", served)
    assert code == 0 and "kaiming-relu@1" in screen and "xavier@1" in screen
    code, screen = _terminal("presets", "show", "xavier@1", "--json", "--server", served)
    assert code == 0 and json.loads(screen)["name"] == "xavier"
    code, screen = _terminal("presets", "show", "xavier@1", "--server", served)
    assert code == 0 and "xavier@1" in screen and "null" not in screen
    code, screen = _terminal("schemes", "--server", served)
    assert code == 0 and "orthogonal" in screen and "truncated_normal" in screen
    code, screen = _terminal("schemes", "nope", "--server", served)
    assert code == 2 and "no scheme 'nope'" in screen and "orthogonal" in screen
    code, screen = _terminal("presets", "show", "missing@9", "--server", served)
    assert code == 2 and "unknown preset 'missing'" in screen and "known presets" in screen


def test_cli_progress_stays_off_the_pipes(served: str, request_file: Path, tmp_path: Path) -> None:
    """Not a terminal (a pipeline's log): no progress bar noise on stderr."""
    out = tmp_path / "piped.safetensors"
    done = _cli("init", str(request_file), "-o", str(out), "--server", served)
    assert done.returncode == 0 and done.stderr == "" and "wrote" in done.stdout


@pytest.fixture
def request_file(tmp_path: Path, mlp_request: dict[str, Any]) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(mlp_request))
    return path


def test_cli_plan_and_init(served: str, request_file: Path, tmp_path: Path) -> None:
    plan = _cli("plan", str(request_file), "--server", served)
    assert plan.returncode == 0, plan.stderr
    assert "fc1.weight" in plan.stdout and "[512, 784]" in plan.stdout and "kaiming_normal" in plan.stdout
    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    init = _cli("init", str(request_file), "-o", str(out), "--report", str(report), "--server", served)
    assert init.returncode == 0, init.stderr
    tensors = load_file(out)
    assert tensors["fc1.weight"].std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.03)
    assert json.loads(report.read_text())["artifact"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_cli_spec_only_file_with_preset_policy(served: str, tmp_path: Path, mlp_request: dict[str, Any]) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(mlp_request["spec"]))
    plan = _cli("plan", str(spec), "--policy", "kaiming-relu", "--json", "--server", served)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["preset"] == "kaiming-relu@2"  # a bare name pins the newest version


def test_cli_errors_say_what_to_fix(served: str, tmp_path: Path, request_file: Path) -> None:
    missing = _cli("plan", str(tmp_path / "nope.json"), "--server", served)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    spec_only = tmp_path / "spec.json"
    spec_only.write_text(json.dumps({"name": "m", "modules": [{"type": "relu"}]}))
    no_policy = _cli("plan", str(spec_only), "--server", served)
    assert no_policy.returncode == 2 and "--policy" in no_policy.stderr
    bad = json.loads(request_file.read_text())
    bad["spec"]["modules"][0]["in_features"] = 0
    request_file.write_text(json.dumps(bad))
    invalid = _cli("init", str(request_file), "-o", str(tmp_path / "x.safetensors"), "--server", served)
    assert invalid.returncode == 2 and "in_features" in invalid.stderr
    unreachable = _cli("plan", str(spec_only), "--policy", "xavier", "--server", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "initium serve" in unreachable.stderr


def test_cli_report_table_and_html(served: str, request_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.safetensors"
    assert _cli("init", str(request_file), "-o", str(out), "--server", served).returncode == 0
    job_id = httpx.post(f"{served}/v1/initializations", json=json.loads(request_file.read_text())).json()["id"]
    html = tmp_path / "report.html"
    shown = _cli("report", job_id, "--html", str(html), "--server", served)
    assert shown.returncode == 0, shown.stderr
    assert "fc1.weight" in shown.stdout and "kaiming_normal" in shown.stdout and "KS p" in shown.stdout
    assert html.read_text().startswith("<!doctype html>")
    missing = _cli("report", "0" * 64, "--server", served)
    assert missing.returncode == 2 and "404" in missing.stderr  # a wrong id is the caller's input


def test_async_client_over_http(served: str, mlp_request: dict[str, Any], tmp_path: Path) -> None:
    from initium.client import AsyncClient

    async def go() -> tuple[str, str]:
        async with AsyncClient(served, progress=False) as client:
            result = await client.initialize(mlp_request, path=tmp_path / "a.safetensors")
            schemes = await client.schemes()
            return result.sha256, ",".join(s.name for s in schemes)

    sha, schemes = asyncio.run(go())
    assert sha == GOLDEN_SHA256 and hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest() == sha
    assert "orthogonal" in schemes


def test_cli_output_into_a_closed_pipe_is_not_an_error(served: str) -> None:
    initium = str(Path(sys.executable).parent / "initium")
    done = subprocess.run(f"{initium} presets list --server {served} | head -1", shell=True, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout.startswith("preset") and "Traceback" not in done.stderr, done.stderr
