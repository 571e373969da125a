"""The HTML report in a real headless Chromium: it renders, with its warnings, plots and table,
and the browser logs no console errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from tests.conftest import wait_for_job

CHROMIUM = shutil.which("chromium")
# Flags for a closed network and a root user (the machine's notes): no sandbox, no background traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]  # fmt: skip


@pytest.fixture
def page(app_client: TestClient, tmp_path: Path) -> Path:
    modules: list[dict[str, Any]] = []
    for _ in range(12):
        modules += [{"type": "linear", "in_features": 64, "out_features": 64}, {"type": "tanh"}]
    body = {"spec": {"name": "tanh-net", "modules": modules}, "policy": {"rules": [{"init": {"scheme": "normal"}}]}}
    job = app_client.post("/v1/initializations", json=body).json()
    assert wait_for_job(app_client, job["id"])["state"] == "succeeded"
    path = tmp_path / "report.html"
    Client(http_client=app_client).report_html(job["id"], path)
    return path


def test_the_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert "<script" not in html and not re.search(r'(src|href)="https?://', html)
    assert "Tanh units saturate" in html and html.count("<svg") == 2 and "0.weight" in html


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed (make debs)")
def test_chromium_renders_it_without_console_errors(page: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must have chromium: `make test` installs it"
    profile = tmp_path / "profile"
    run = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    dom = run.stdout
    assert "<h1>initium report</h1>" in dom and dom.count("<svg") == 2 and "Tanh units saturate" in dom
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1200,900",
                    page.as_uri()], capture_output=True, timeout=120, check=True)  # fmt: skip
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
